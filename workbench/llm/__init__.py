"""The LLM seam: one async OpenAI-compatible client with limits, retries, a durable cache and cost."""
