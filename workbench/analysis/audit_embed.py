"""Text backends of `workbench audit`: how instructions (and task types) become vectors.

    minilm   the sentence model itself (`textembed`, PyTorch, fp32): the default and the reference
    static   a static embedding distilled here from the same model with `model2vec` (one forward pass per
             vocabulary token, PCA 256, SIF weights; 20 s - 4 min once per workspace, offline): 50-75x
             faster (1 M items in ~1-2 min on 2 cores), but its top-1 agrees with `minilm` on only 43-63 %
             of items (the reference is in its top-5 on 71-83 %): a quick first look, opt-in

Measured and left out (`benchmarks/bench_audit.py`; the minilm pass's own speed is in audit.py): the
same MiniLM exported to ONNX Runtime fp32 (identical top-1, only 1.1-1.35x the PyTorch pass on 2 cores);
int8 dynamic quantisation (ONNX Runtime: 80-85 % top-1 agreement); truncating instructions to 32/64 tokens
(first turns are short: none of the measured ones was cut, nothing to gain once batches are length-sorted).

The distilled model is cached per workspace under `arrays/audit/models/static-<tag>/` (tag: hash of the
model folder and the recipe version), and the backend's `tag` is stored with every audit so two audits are
comparable only when made the same way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.models.textembed import (
    DEFAULT_MODEL,
    _load,
    embed_texts,
    model_path,
    uncached,
    workspace_cache_dir,
)

BACKENDS = ("minilm", "static")
_VERSION = {"static": "1"}                   # bump when the distillation recipe changes
_SESSIONS: dict[str, object] = {}
_LOCK = threading.Lock()


def _have(*mods: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in mods)


def default_backend() -> str:
    """The reference: faster backends lose assignment quality (see the module docstring)."""
    return "minilm"


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise WorkbenchError(f"--text-backend {name!r}: use one of {', '.join(BACKENDS)}")
    need = {"static": ("model2vec", "skeletoken")}.get(name, ())
    if need and not _have(*need):
        raise WorkbenchError(f"--text-backend {name} needs {', '.join(need)}: pip install "
                             f"'taskgalaxy-workbench[analysis]' (or --text-backend minilm)")
    return name


def _model_dir(model: str | None) -> Path:
    return model_path(model)


def tag(name: str, model: str | None) -> str:
    """Identifies how vectors were made: backend, model folder, recipe version."""
    if name == "minilm":
        return "minilm"
    h = hashlib.blake2b(f"{_model_dir(model).resolve()}|{_VERSION[name]}".encode(), digest_size=5).hexdigest()
    return f"{name}-{h}"


def _models_root(ws: Workspace) -> Path:
    return ws.arrays_dir / "audit" / "models"


# -- static (model2vec) ------------------------------------------------------------------------------

def static_cached(ws: Workspace, model: str | None) -> bool:
    """Whether this workspace already holds the distilled static model (else the first use distils it)."""
    return (_models_root(ws) / tag("static", model) / "config.json").exists()


def _static_model(ws: Workspace, model: str | None):
    t = tag("static", model)
    d = _models_root(ws) / t
    with _LOCK:
        if t not in _SESSIONS:
            if not (d / "config.json").exists():
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                import logging

                from model2vec.distill import distill_from_model


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

def embed(ws: Workspace, texts: list[str], backend: str, model: str | None) -> np.ndarray:
    """(len(texts), dim) float32, rows L2-normalised, made with `backend`."""
    texts = list(texts)
    if backend == "minilm":
        return embed_texts(texts, model)
    if backend == "static":
        m = _static_model(ws, model)
        if not texts:
            return np.zeros((0, m.dim), np.float32)
        v = np.asarray(m.encode(texts, show_progress_bar=False), dtype=np.float32)
        n = np.linalg.norm(v, axis=1, keepdims=True)
        return v / np.maximum(n, 1e-12)
    raise WorkbenchError(f"unknown text backend {backend!r}: use one of {', '.join(BACKENDS)}")


def new_task_texts(ws: Workspace, texts: list[str], backend: str, model: str | None) -> int:
    """How many distinct `texts` `task_vectors` will embed anew (minilm: those not in the workspace's vector
    cache; static: all, it is cheap)."""
    if backend == "static" or model_path(model) != model_path(DEFAULT_MODEL):
        return len(set(texts))
    return uncached(texts, model, workspace_cache_dir(ws))


def task_vectors(ws: Workspace, texts: list[str], backend: str, model: str | None) -> np.ndarray:
    """Task-type texts: `minilm` uses the on-disk cache of the sentence model; `static` embeds them with the
    static model."""
    if backend == "static":
        return embed(ws, texts, backend, model)

    if model_path(model) != model_path(DEFAULT_MODEL):
        # textembed's on-disk cache computes missing vectors with the default model whatever `model` is
        # (`_cached` calls embed_texts(missing) without it): only the default model may use it
        return embed_texts(texts, model)
    return embed_texts(texts, model, cache_dir=workspace_cache_dir(ws))
