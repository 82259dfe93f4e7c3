"""A local transformers model behind the same seam as the OpenAI-compatible client.

`[endpoints.NAME] kind = "transformers"`, `local_path = "/models/InternVL2-2B"` (a folder with a
processor/tokenizer and weights, or a .gguf file for a text-only model). The client takes the same
chat messages (images as data URLs), renders them with the model's chat template, decodes greedily
when temperature is 0, and returns the same CallRecord: raw text, exact token counts, cost at the
endpoint's price (0 unless one is configured), finish_reason 'length' when generation hit max_tokens,
status 'error' ("empty reply") when it generated nothing but whitespace. Nothing is downloaded: the
path must exist.
Generations run one at a time in a worker thread (a CPU or one GPU is saturated by one).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from pathlib import Path

from workbench.errors import ConfigError, WorkbenchError
from workbench.llm.cache import CallRecord
from workbench.llm.cost import cost_usd

_MODELS: dict[str, tuple] = {}
_LOAD_LOCK = threading.Lock()
DEFAULT_MAX_NEW_TOKENS = 256


def _decode_image(url: str):
    from PIL import Image

    if not url.startswith("data:") or "," not in url:
        raise WorkbenchError("a local transformers model takes images as data URLs only (got a remote URL)")
    data = base64.b64decode(url.split(",", 1)[1])
    return Image.open(io.BytesIO(data)).convert("RGB")


def load_local_model(path: str | Path):
    """(processor_or_tokenizer, model, has_vision) for a local folder or .gguf file; cached per process."""
    p = Path(path).expanduser()
    key = str(p.resolve()) if p.exists() else str(p)
    with _LOAD_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        if not p.exists():
            raise ConfigError(f"local model {str(p)!r} not found; set [endpoints.NAME] local_path to a folder "
                              "saved with save_pretrained (or a .gguf file); nothing is downloaded")
        import transformers as tf

        try:
            if p.is_file() and p.suffix == ".gguf":
                tok = tf.AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name, local_files_only=True)
                model = tf.AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name,
                                                                local_files_only=True)
                loaded = (tok, model, False)
            else:
                cfg = tf.AutoConfig.from_pretrained(str(p), local_files_only=True)
                has_vision = hasattr(cfg, "vision_config") and cfg.vision_config is not None
                if has_vision:
                    proc = tf.AutoProcessor.from_pretrained(str(p), local_files_only=True)
                    model = tf.AutoModelForImageTextToText.from_pretrained(str(p), local_files_only=True)
                else:
                    proc = tf.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
                    model = tf.AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True)
                loaded = (proc, model, has_vision)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"local model {str(p)!r} cannot be loaded with transformers: {exc}") from None
        loaded[1].eval()
        _MODELS[key] = loaded
        return loaded


def _to_hf_messages(messages: list[dict], has_vision: bool) -> tuple[list[dict], list]:
    out, images = [], []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": m["role"], "content": [{"type": "text", "text": content}] if has_vision else content})
            continue
        parts, texts = [], []
        for part in content or []:
            if part.get("type") == "image_url":
                if not has_vision:
                    raise WorkbenchError("this local model has no vision tower but the prompt carries an image")
                img = _decode_image(part["image_url"]["url"])
                images.append(img)
                parts.append({"type": "image"})
            elif part.get("type") == "text":
                parts.append({"type": "text", "text": part["text"]})
                texts.append(part["text"])
        out.append({"role": m["role"], "content": parts if has_vision else "\n".join(texts)})
    return out, images


class LocalTransformersClient:
    """Same surface as LLMClient: `await complete(messages, params)`, `close()`, `_record(...)`."""

    _gen_lock = threading.Lock()

    def __init__(self, endpoint):
        self.endpoint = endpoint
        if not endpoint.config.local_path:
            raise ConfigError(f"workbench.toml: [endpoints.{endpoint.name}] kind = \"transformers\" needs local_path")
        self.path = endpoint.config.local_path

    async def complete(self, messages: list[dict], params: dict, est_tokens: int | None = None) -> CallRecord:
        t0 = time.monotonic()
        try:
            return await asyncio.to_thread(self._generate, messages, params, t0)
        except WorkbenchError as exc:
            return self._record("error", error=str(exc), latency_s=time.monotonic() - t0)
        except Exception as exc:  # a model failure is recorded, not raised, like an HTTP error
            return self._record("error", error=f"{type(exc).__name__}: {exc}", latency_s=time.monotonic() - t0)

    def _generate(self, messages, params, t0) -> CallRecord:
        import torch

        proc, model, has_vision = load_local_model(self.path)
        hf_messages, images = _to_hf_messages(messages, has_vision)
        tok = getattr(proc, "tokenizer", proc)
        prompt = proc.apply_chat_template(hf_messages, add_generation_prompt=True, tokenize=False)
        if has_vision:
            inputs = proc(text=[prompt], images=images or None, return_tensors="pt")
        else:
            inputs = tok([prompt], return_tensors="pt", add_special_tokens=False)
        max_new = int(params.get("max_tokens") or DEFAULT_MAX_NEW_TOKENS)
        temperature = float(params.get("temperature") or 0.0)
        gen_kwargs = dict(max_new_tokens=max_new, do_sample=temperature > 0,
                          pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        if temperature > 0:
            gen_kwargs["temperature"] = temperature
            if params.get("top_p"):
                gen_kwargs["top_p"] = float(params["top_p"])
        with self._gen_lock, torch.inference_mode():
            out = model.generate(**inputs, **gen_kwargs)
        n_in = int(inputs["input_ids"].shape[1])
        new = out[0, n_in:]
        eos = tok.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        hit_eos = len(new) > 0 and int(new[-1]) in eos_ids
        finish = "length" if (len(new) >= max_new and not hit_eos) else "stop"
        text = tok.decode(new, skip_special_tokens=True)
        raw = {"object": "chat.completion", "model": self.endpoint.model, "backend": "transformers",
               "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}],
               "usage": {"prompt_tokens": n_in, "completion_tokens": int(len(new))}}
        if finish != "stop":
            status, error = "error", f"finish_reason={finish} (max_tokens={max_new})"
        elif not text.strip():
            status, error = "error", f"empty reply (finish_reason={finish})"   # retried on the next run
        else:
            status, error = "ok", None
        return self._record(status, raw_text=text, raw_response=json.dumps(raw), finish_reason=finish, error=error,
                            prompt_tokens=n_in, completion_tokens=int(len(new)), latency_s=time.monotonic() - t0)

    def _record(self, status, *, error=None, raw_text=None, raw_response=None, finish_reason=None, attempts=1,
                prompt_tokens=None, completion_tokens=None, latency_s=None) -> CallRecord:
        price = getattr(self.endpoint, "price", None)   # (0, 0) unless configured: an in-process model is free
        cost = cost_usd(price, prompt_tokens, completion_tokens) if price is not None else 0.0
        return CallRecord(key="", stage="", endpoint=self.endpoint.name, model=self.endpoint.model,
                          stage_run_id=None, prompt_file=None, prompt_hash=None, request="", status=status,
                          raw_text=raw_text, raw_response=raw_response, finish_reason=finish_reason, error=error,
                          prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost,
                          latency_s=latency_s, attempts=attempts, created_at="")

    async def close(self) -> None:
        return None
