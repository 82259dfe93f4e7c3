"""Text backends of `workbench audit`: how instructions (and task types) become vectors.

    minilm   the sentence model itself (`textembed`, PyTorch, fp32): the reference
    onnx     the same model exported here to ONNX (torch.onnx, from the local weights, no download) and run
             by ONNX Runtime, fp32; measured the same top-1 as `minilm` on every item we tried, about 2x
             faster on a 2-core CPU (`benchmarks/bench_audit.py`)
    static   a static embedding distilled here from the same model with `model2vec` (one forward pass per
             vocabulary token, PCA 256, SIF weights; ~1-3 min once per workspace): 100x+ faster, but its
             top-1 agrees with `minilm` on only ~60 % of items (top-5 holds it ~80 %): a quick first look

Left out after measuring (see the benchmark): int8 dynamic quantisation (ONNX Runtime or torch) agreed
with fp32 on only 80-85 % of top-1s for a small speed gain; truncating instructions below the model's 128
tokens cuts almost nothing (first turns are short) and saves little once batches are length-sorted.

Exported/distilled models are cached per workspace under `arrays/audit/models/<backend>-<tag>/` (tag: hash
of the model folder and the backend version), and the backend's `tag` is stored with every audit so two
audits are comparable only when made the same way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError

BACKENDS = ("minilm", "onnx", "static")
_VERSION = {"onnx": "1", "static": "1"}      # bump when the export/distillation recipe changes
BATCH = 256                                  # ONNX Runtime: bigger batches than textembed's 64 pay off
_SESSIONS: dict[str, object] = {}
_LOCK = threading.Lock()


def _have(*mods: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in mods)


def default_backend() -> str:
    """`onnx` when ONNX Runtime and onnx are installed (the `analysis` extra), else `minilm`."""
    return "onnx" if _have("onnxruntime", "onnx") else "minilm"


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise WorkbenchError(f"--text-backend {name!r}: use one of {', '.join(BACKENDS)}")
    need = {"onnx": ("onnxruntime", "onnx"), "static": ("model2vec", "skeletoken")}.get(name, ())
    if need and not _have(*need):
        raise WorkbenchError(f"--text-backend {name} needs {', '.join(need)}: pip install "
                             f"'taskgalaxy-workbench[analysis]' (or --text-backend minilm)")
    return name


def _model_dir(model: str | None) -> Path:
    from workbench.textembed import model_path

    return model_path(model)


def tag(name: str, model: str | None) -> str:
    """Identifies how vectors were made: backend, model folder, recipe version."""
    if name == "minilm":
        return "minilm"
    h = hashlib.blake2b(f"{_model_dir(model).resolve()}|{_VERSION[name]}".encode(), digest_size=5).hexdigest()
    return f"{name}-{h}"


def _models_root(ws) -> Path:
    return ws.arrays_dir / "audit" / "models"


# -- onnx --------------------------------------------------------------------------------------------

def _export_onnx(model: str | None, dest: Path) -> None:
    """MiniLM + mean pooling + L2 norm as one ONNX graph (the exact computation of `textembed`)."""
    import torch

    from workbench.textembed import _load

    tok, mdl = _load(model)

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            hidden = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)

    enc = tok(["an example", "a second, longer example text"], padding=True, return_tensors="pt")
    tmp = dest.with_name(dest.name + ".tmp")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Pooled(mdl).eval(), (enc["input_ids"], enc["attention_mask"]), str(tmp),
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}},
                          opset_version=17, dynamo=False)
    os.replace(tmp, dest)


def _onnx_session(ws, model: str | None):
    t = tag("onnx", model)
    d = _models_root(ws) / t
    f = d / "model.onnx"
    with _LOCK:     # one session per process and tag; the file is in every workspace that used it
        if t in _SESSIONS and not f.exists():
            d.mkdir(parents=True, exist_ok=True)
            tmp = f.with_name(f.name + ".tmp")
            src = _SESSIONS[t + ":file"]
            try:
                os.link(src, tmp)                          # same file system: no copy
            except OSError:
                if Path(src).exists():
                    shutil.copyfile(src, tmp)
            if tmp.exists():
                os.replace(tmp, f)
            else:                                          # the first workspace is gone: export again
                _export_onnx(model, f)
        if t not in _SESSIONS:
            if not f.exists():
                d.mkdir(parents=True, exist_ok=True)
                _export_onnx(model, f)
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.log_severity_level = 3
            _SESSIONS[t] = ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
            _SESSIONS[t + ":file"] = str(f)
        return _SESSIONS[t]


def _embed_onnx(ws, texts: list[str], model: str | None) -> np.ndarray:
    from workbench.textembed import MAX_TOKENS, _load

    tok, _ = _load(model)
    sess = _onnx_session(ws, model)
    out = []
    for i in range(0, len(texts), BATCH):
        enc = tok(texts[i:i + BATCH], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="np")
        out.append(sess.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                                   "attention_mask": enc["attention_mask"].astype(np.int64)})[0])
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, 384), np.float32)


# -- static (model2vec) ------------------------------------------------------------------------------

def static_cached(ws, model: str | None) -> bool:
    """Whether this workspace already holds the distilled static model (else the first use distils it)."""
    return (_models_root(ws) / tag("static", model) / "config.json").exists()


def _static_model(ws, model: str | None):
    t = tag("static", model)
    d = _models_root(ws) / t
    with _LOCK:
        if t not in _SESSIONS:
            if not (d / "config.json").exists():
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                import logging

                from model2vec.distill import distill_from_model

                from workbench.textembed import _load

                logging.getLogger("model2vec").setLevel(logging.ERROR)
                tok, mdl = _load(model)
                m = distill_from_model(mdl, tok, device="cpu", pca_dims=256)
                tmp = d.with_name(d.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                m.save_pretrained(str(tmp))
                shutil.rmtree(d, ignore_errors=True)
                os.replace(tmp, d)       # a distilled model is either whole or absent
            from model2vec import StaticModel

            _SESSIONS[t] = StaticModel.from_pretrained(str(d))
        return _SESSIONS[t]


# -- the one entry point -----------------------------------------------------------------------------

def embed(ws, texts: list[str], backend: str, model: str | None) -> np.ndarray:
    """(len(texts), dim) float32, rows L2-normalised, made with `backend`."""
    texts = list(texts)
    if backend == "minilm":
        from workbench.textembed import embed_texts

        return embed_texts(texts, model)
    if backend == "onnx":
        return _embed_onnx(ws, texts, model)
    if backend == "static":
        m = _static_model(ws, model)
        if not texts:
            return np.zeros((0, m.dim), np.float32)
        v = np.asarray(m.encode(texts, show_progress_bar=False), dtype=np.float32)
        n = np.linalg.norm(v, axis=1, keepdims=True)
        return v / np.maximum(n, 1e-12)
    raise WorkbenchError(f"unknown text backend {backend!r}: use one of {', '.join(BACKENDS)}")


def task_vectors(ws, texts: list[str], backend: str, model: str | None) -> np.ndarray:
    """Task-type texts: `minilm`/`onnx` share the on-disk cache of the sentence model (same vectors);
    `static` embeds them with the static model."""
    if backend == "static":
        return embed(ws, texts, backend, model)
    from workbench.textembed import embed_texts, workspace_cache_dir

    return embed_texts(texts, model, cache_dir=workspace_cache_dir(ws))
