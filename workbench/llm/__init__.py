"""The LLM layer: the async OpenAI-compatible client (limits, retries, pools), local transformers models, the
durable call cache, prices, prompt templates and the Batch API. The seam that dispatches a stage's calls through
them is `stages/dispatch.py`."""
