"""A local transformers model behind the same seam as the OpenAI-compatible client.

`[endpoints.NAME] kind = "transformers"`, `local_path = "/models/InternVL2-2B"` (a folder with a
processor/tokenizer and weights, or a .gguf file for a text-only model). The client takes the same
chat messages (images as data URLs), renders them with the model's chat template, decodes greedily
when temperature is 0, and returns the same CallRecord: raw text, exact token counts, cost at the
endpoint's price (0 unless one is configured), finish_reason 'length' when generation hit max_tokens,
status 'error' ("empty reply") when it generated nothing but whitespace. Nothing is downloaded: the
path must exist (`workbench models pull` puts models in the hub cache).

- Batching: calls that arrive together (the seam runs up to the endpoint's `max_concurrency` at once) are
  generated as one left-padded batch of at most `max_concurrency` rows with the same generation settings;
  a batch the model refuses is retried row by row. On a CPU, decoding one row is memory-bound, so a batch
  of 4 costs little more than one row (`benchmarks/bench_local_models.py`).
- Precision: bfloat16 where the hardware computes it natively (CUDA with bf16, CPUs with AMX or AVX512-BF16),
  else float32 (bf16 emulated on an AVX2 CPU is slower than fp32). `WORKBENCH_LOCAL_DTYPE=float32|bfloat16`
  overrides.
- Memory: before loading, the parameter count (read from the safetensors headers) × bytes per parameter is
  compared with the memory available; a model that cannot fit is refused with a message saying so.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import io
import json
import os
import queue
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from workbench.core.errors import ConfigError, WorkbenchError
from workbench.llm.cache import CallRecord
from workbench.llm.cost import cost_usd
from workbench.models.profiles import spec_for_path

_MODELS: dict[str, tuple] = {}
_LOAD_LOCK = threading.Lock()
_GEN_LOCK = threading.Lock()   # one generate() at a time in this process: it already uses every core
DEFAULT_MAX_NEW_TOKENS = 256
BATCH_WAIT_S = 0.05          # how long the batcher waits for more calls after the first one arrives


class ModelTooLarge(ConfigError):
    """The model's weights do not fit in this machine's available memory."""


def _decode_image(url: str):
    from PIL import Image

    if not url.startswith("data:") or "," not in url:
        raise WorkbenchError("a local transformers model takes images as data URLs only (got a remote URL)")
    data = base64.b64decode(url.split(",", 1)[1])
    return Image.open(io.BytesIO(data)).convert("RGB")


# -- precision and memory -------------------------------------------------------------------------------------
def cpu_has_native_bf16() -> bool:
    import torch

    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:
            pass
    return False


def preferred_dtype(device: str = "cpu"):
    import torch

    forced = os.environ.get("WORKBENCH_LOCAL_DTYPE", "").strip().lower()
    if forced in ("float32", "fp32"):
        return torch.float32
    if forced in ("bfloat16", "bf16"):
        return torch.bfloat16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def available_memory_bytes() -> int:
    """MemAvailable (Linux), else free physical pages × page size."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def parameter_count(folder: Path) -> int:
    """Parameters in the folder's safetensors files, from their headers (no weights are read)."""
    total = 0
    for f in sorted(Path(folder).glob("*.safetensors")):
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for d in meta["shape"]:
                count *= int(d)
            total += count
    return total


def check_fits(folder: Path, dtype, *, available: int | None = None) -> None:
    import torch

    n = parameter_count(folder)
    if not n:
        return
    per = torch.finfo(dtype).bits // 8
    need = int(n * per * 1.2) + (512 << 20)   # weights + activations, KV cache and the runtime
    avail = available_memory_bytes() if available is None else available
    if need > avail:
        raise ModelTooLarge(
            f"local model {folder}: {n / 1e6:,.0f}M parameters need about {need / 2**30:.1f} GiB in {str(dtype)[6:]} "
            f"but this machine has {avail / 2**30:.1f} GiB available; use a smaller model (`workbench models pull "
            "--profile small`), free memory, or serve this one on a bigger machine behind an OpenAI-compatible "
            "endpoint ([endpoints.NAME] base_url)")


def load_local_model(path: str | Path):
    """(processor_or_tokenizer, model, has_vision) for a local folder or .gguf file; cached per process."""
    p = Path(path).expanduser()
    key = str(p.resolve()) if p.exists() else str(p)
    with _LOAD_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        if not p.exists():
            raise ConfigError(f"local model {str(p)!r} not found; set [endpoints.NAME] local_path to a folder "
                              "saved with save_pretrained (or a .gguf file), or pull one with `workbench models "
                              "pull`; nothing is downloaded here")
        import transformers as tf

        dtype = preferred_dtype("cpu")
        try:
            if p.is_file() and p.suffix == ".gguf":
                tok = tf.AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name, local_files_only=True)
                model = tf.AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name,
                                                                local_files_only=True)
                loaded = (tok, model, False)
            else:
                check_fits(p, dtype)
                cfg = tf.AutoConfig.from_pretrained(str(p), local_files_only=True)
                has_vision = hasattr(cfg, "vision_config") and cfg.vision_config is not None
                if has_vision:
                    proc = tf.AutoProcessor.from_pretrained(str(p), local_files_only=True)
                    model = tf.AutoModelForImageTextToText.from_pretrained(str(p), local_files_only=True, dtype=dtype)
                else:
                    proc = tf.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
                    model = tf.AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, dtype=dtype)
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


# -- batched generation ---------------------------------------------------------------------------------------
@dataclass
class _Request:
    messages: list[dict]
    params: dict
    t0: float
    future: concurrent.futures.Future

    def gen_key(self) -> tuple:
        return (int(self.params.get("max_tokens") or DEFAULT_MAX_NEW_TOKENS), float(self.params.get("temperature")
                or 0.0), self.params.get("top_p"), any(isinstance(m.get("content"), list) and any(
                    p.get("type") == "image_url" for p in m["content"]) for m in self.messages))


class _Batcher:
    """One worker thread per model: takes the calls waiting, groups those with the same settings, generates."""

    def __init__(self, client: LocalTransformersClient):
        self.client = client
        self.q: queue.Queue[_Request] = queue.Queue()
        self.pending: list[_Request] = []
        threading.Thread(target=self._loop, name="workbench-local-model", daemon=True).start()

    def submit(self, req: _Request) -> None:
        self.q.put(req)

    def _take(self) -> list[_Request]:
        if not self.pending:
            self.pending.append(self.q.get())
        deadline = time.monotonic() + BATCH_WAIT_S
        while len(self.pending) < self.client.batch_size:
            left = deadline - time.monotonic()
            try:
                self.pending.append(self.q.get(timeout=max(left, 0)) if left > 0 else self.q.get_nowait())
            except queue.Empty:
                break
        key = self.pending[0].gen_key()
        batch = [r for r in self.pending if r.gen_key() == key][: self.client.batch_size]
        self.pending = [r for r in self.pending if r not in batch]
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            results: Sequence[CallRecord | Exception]
            try:
                results = self.client._generate_batch(batch)
            except Exception as exc:
                if len(batch) > 1:    # some models refuse padded batches: fall back to one row at a time
                    rows: list[CallRecord | Exception] = []
                    for r in batch:
                        try:
                            rows += self.client._generate_batch([r])
                        except Exception as one:
                            rows.append(one)
                    results = rows
                else:
                    results = [exc]
            for r, res in zip(batch, results):
                if isinstance(res, Exception):
                    msg = str(res) if isinstance(res, WorkbenchError) else f"{type(res).__name__}: {res}"
                    res = self.client._record("error", error=msg, latency_s=time.monotonic() - r.t0)
                r.future.set_result(res)


class LocalTransformersClient:
    """Same surface as LLMClient: `await complete(messages, params)`, `close()`, `_record(...)`."""

    _batchers: dict[str, _Batcher] = {}
    _batchers_lock = threading.Lock()

    def __init__(self, endpoint):
        self.endpoint = endpoint
        if not endpoint.config.local_path:
            raise ConfigError(f"workbench.toml: [endpoints.{endpoint.name}] kind = \"transformers\" needs local_path")
        self.path = endpoint.config.local_path
        self.batch_size = max(1, int(getattr(endpoint.config, "max_concurrency", 1) or 1))

        spec = spec_for_path(self.path)
        self.processor_kwargs = dict(spec.processor_kwargs) if spec else {}

    def _batcher(self) -> _Batcher:
        key = f"{Path(self.path).expanduser()}|{self.batch_size}|{self.endpoint.name}"
        with self._batchers_lock:
            b = self._batchers.get(key)
            if b is None:
                b = self._batchers[key] = _Batcher(self)
            else:
                b.client = self   # the latest client's endpoint (price, model name) records the calls
            return b

    async def complete(self, messages: list[dict], params: dict, est_tokens: int | None = None) -> CallRecord:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._batcher().submit(_Request(messages, params, time.monotonic(), fut))
        return await asyncio.wrap_future(fut)

    def _generate_batch(self, batch: list[_Request]) -> list[CallRecord]:
        import torch

        proc, model, has_vision = load_local_model(self.path)
        tok = getattr(proc, "tokenizer", proc)
        prompts, images = [], []
        for r in batch:
            hf_messages, imgs = _to_hf_messages(r.messages, has_vision)
            prompts.append(proc.apply_chat_template(hf_messages, add_generation_prompt=True, tokenize=False))
            images.append(imgs)
        tok.padding_side = "left"     # generation appends on the right: every row must end at the same column
        if has_vision:
            with_images = [im for im in images if im]
            inputs = proc(text=prompts, images=images if with_images else None, padding=True, return_tensors="pt",
                          **(self.processor_kwargs if with_images else {}))
        else:
            inputs = tok(prompts, return_tensors="pt", add_special_tokens=False, padding=True)
        inputs = {k: (v.to(model.dtype) if torch.is_floating_point(v) else v) for k, v in inputs.items()}
        params = batch[0].params
        max_new = int(params.get("max_tokens") or DEFAULT_MAX_NEW_TOKENS)
        temperature = float(params.get("temperature") or 0.0)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        gen_kwargs = {"max_new_tokens": max_new, "do_sample": temperature > 0, "pad_token_id": pad}
        if temperature > 0:
            gen_kwargs["temperature"] = temperature
            if params.get("top_p"):
                gen_kwargs["top_p"] = float(params["top_p"])
        with _GEN_LOCK, torch.inference_mode():
            out = model.generate(**inputs, **gen_kwargs)
        width = int(inputs["input_ids"].shape[1])
        eos = tok.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos]) - {None}
        records = []
        for i, r in enumerate(batch):
            n_in = int(inputs["attention_mask"][i].sum()) if "attention_mask" in inputs else width
            new = [int(t) for t in out[i, width:]]
            cut = next((j for j, t in enumerate(new) if t in eos_ids), None)
            hit_eos = cut is not None
            new = new[: cut + 1] if cut is not None else new
            finish = "length" if (len(new) >= max_new and not hit_eos) else "stop"
            text = tok.decode(new, skip_special_tokens=True)
            raw = {"object": "chat.completion", "model": self.endpoint.model, "backend": "transformers",
                   "batch_size": len(batch), "dtype": str(model.dtype).removeprefix("torch."),
                   "choices": [{"index": 0, "finish_reason": finish,
                                "message": {"role": "assistant", "content": text}}],
                   "usage": {"prompt_tokens": n_in, "completion_tokens": len(new)}}
            if finish != "stop":
                status, error = "error", f"finish_reason={finish} (max_tokens={max_new})"
            elif not text.strip():
                status, error = "error", f"empty reply (finish_reason={finish})"   # retried on the next run
            else:
                status, error = "ok", None
            records.append(self._record(status, raw_text=text, raw_response=json.dumps(raw), finish_reason=finish,
                                        error=error, prompt_tokens=n_in, completion_tokens=len(new),
                                        latency_s=time.monotonic() - r.t0))
        return records

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
