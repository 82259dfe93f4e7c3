"""Loading an open_clip model from `[clip]` in workbench.toml, and batched, normalised encoding.

`model` is an open_clip model name (`ViT-L-14`) or a path to a model-config JSON file (a custom
architecture, e.g. the tiny one tests and demos use). `pretrained` is a pretrained tag, a local
checkpoint file, a `local-dir:` folder, or empty/`none` for random weights (testing only).

Pretrained tags download from a model hub. Offline, a tag is used only when its file is already
in the local cache; otherwise `ClipWeightsMissing` says exactly what to set, instead of a hang or
a traceback (`allow_download = true` lets open_clip fetch it). Heavy imports are lazy. Random weights are seeded
(consistent caches) and warned about once per process and config.

Encoding: the text tower runs on only the token columns a batch uses (exact: the tower is causal and pools at the
end-of-text token); `[clip] image_precision = "bf16"` runs the image tower in bfloat16 (the text tower stays fp32).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.core.errors import WorkbenchError

NO_WEIGHTS = {"", "none", "random"}

# A 3-million-parameter CLIP for tests and demos: random weights, real code path, ~8k images/s on CPU.
TINY_MODEL_NAME = "wb-tiny-clip"
TINY_MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


class ClipWeightsMissing(WorkbenchError):
    """The configured pretrained weights are not on this machine."""


log = logging.getLogger("workbench.clip")
# (arch id) of the random-weight models this process has warned about: one warning per process and config,
# however many times a command loads the model (`workbench match` loads it for texts, then for images).
_WARNED: set[str] = set()


def _warn_random_weights(arch_id: str) -> None:
    if arch_id in _WARNED:
        return
    _WARNED.add(arch_id)
    log.warning("CLIP weights: random ([clip] pretrained = \"\" for %s): embeddings and matches are "
                "meaningless; for testing only. Set [clip] pretrained to a checkpoint for real use.", arch_id)


class _DropOpenClipRandomInit(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init():
    """open_clip logs its own 'No pretrained weights loaded ... initialized randomly' on the root logger at
    every load; the workbench says it once instead (`_warn_random_weights`)."""
    f = _DropOpenClipRandomInit()
    root = logging.getLogger()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def write_model_config(path: Path | str, config: dict | None = None) -> Path:
    """Write an open_clip model-config JSON (default: the tiny test/demo model); `[clip] model` may name it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config or TINY_MODEL_CONFIG, indent=1), encoding="utf-8")
    return path


def register_model_config(path: Path | str) -> str:
    """Make a model-config JSON known to open_clip under its file stem; returns that name."""
    import open_clip

    path = Path(path)
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkbenchError(f"{path}: not a readable open_clip model-config JSON ({exc}); fix [clip] model") from None
    if path.stem not in open_clip.list_models():
        open_clip.add_model_config(path)
    return path.stem


def resolve_device(device: str) -> str:
    import torch

    if device in ("auto", ""):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WorkbenchError(f"[clip] device = {device!r} but no CUDA GPU is available; "
                             "set device = \"auto\" or \"cpu\"")
    return device


def _cached_pretrained_file(model_name: str, tag: str) -> str | None:
    """The local file of a pretrained tag if it was downloaded before; never touches the network."""
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name, tag)
    if not cfg:
        return None
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    hub = cfg.get("hf_hub", "")
    if hub:
        cached_file: Callable[[str, str], object] | None
        try:
            from huggingface_hub import try_to_load_from_cache as cached_file
        except ImportError:  # pragma: no cover - huggingface_hub ships with open_clip
            cached_file = None
        if cached_file is not None:
            repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
            names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            for name in names:
                hit = cached_file(repo, name)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return hit
    url = cfg.get("url", "")
    if url:
        candidate = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(candidate):
            return candidate
    return None


def _resolve_pretrained(model_name: str, pretrained: str | None, allow_download: bool,
                        base_dir: Path | None) -> str | None:
    """None for random weights, else what to pass to open_clip (a file path, a folder, or a tag)."""
    import open_clip

    if pretrained is None or pretrained.strip().lower() in NO_WEIGHTS:
        return None
    value = pretrained.strip()
    if value.startswith("local-dir:"):
        return value
    as_path = Path(os.path.expanduser(value))
    if not as_path.is_absolute() and base_dir is not None:
        as_path = base_dir / as_path
    if as_path.is_file():
        return str(as_path)
    looks_like_path = os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))
    if looks_like_path:
        raise ClipWeightsMissing(f"[clip] pretrained = {pretrained!r}: no such checkpoint file ({as_path}); "
                                 "set it to an existing local checkpoint file")
    known = open_clip.list_pretrained_tags_by_model(model_name)
    if value not in known:
        raise WorkbenchError(f"[clip] pretrained = {value!r} is not a pretrained tag of {model_name!r} "
                             f"(known: {', '.join(known) or 'none'}); set a local checkpoint file path, or "
                             "pretrained = \"\" for random weights (testing only)")
    cached = _cached_pretrained_file(model_name, value)
    if cached:
        return cached
    if allow_download:
        return value
    raise ClipWeightsMissing(
        f"[clip] model = {model_name!r}, pretrained = {value!r}: these weights are not on this machine and "
        "would have to be downloaded from a model hub. In workbench.toml set [clip] pretrained to a local "
        "checkpoint file path (e.g. pretrained = \"/models/ViT-L-14-openai.pt\"), or set allow_download = true "
        "on a machine with internet, or pretrained = \"\" for random weights (testing only)")


@dataclass
class ClipModel:
    """A loaded open_clip model with its preprocessing and tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    model_name: str
    pretrained: str | None       # what was loaded: None (random), a file or a tag
    image_precision: str = "fp32"
    context_length: int = 77
    arch_id: str = ""            # the model name, plus a hash of its config file when one was given
    _image_dtype: Any = field(default=None, repr=False)

    @property
    def weights_id(self) -> str:
        return weights_id(self.pretrained)

    @property
    def dim(self) -> int:
        import torch

        with torch.no_grad():
            return int(self.encode_texts(["x"])[0].shape[1])

    # -- text --------------------------------------------------------------------------------
    def token_count(self, text: str) -> int:
        """Tokens including start/end markers, untruncated."""
        tok = self.tokenizer
        if hasattr(tok, "encode"):
            return len(tok.encode(text)) + 2
        inner = getattr(tok, "tokenizer", None)
        if inner is not None:
            return len(inner(text)["input_ids"])
        return 0

    def encode_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """L2-normalised float32 rows and a bool per text: was it longer than the context (cut)?"""
        import torch

        truncated = np.array([self.token_count(t) > self.context_length for t in texts], dtype=bool)
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.no_grad():
            feats = self._encode_text_tokens(tokens)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False), truncated

    def _encode_text_tokens(self, tokens):
        """CLIP's text tower on the batch's used columns only.

        The text tower is causal and pools at the end-of-text token (argmax/eos), so padding after
        the longest text in the batch cannot change any result; dropping those columns is exact and
        makes short task paths (~20 of 77 tokens) several times cheaper. Other towers: the stock call.
        """
        m = self.model
        pool = getattr(m, "text_pool_type", None)
        simple = (hasattr(m, "token_embedding") and hasattr(m, "positional_embedding")
                  and getattr(m, "attn_mask", None) is not None and pool in ("argmax", "eos")
                  and not getattr(m, "text_no_causal_mask", False))
        if not simple:
            return m.encode_text(tokens)
        import torch

        used = int((tokens != 0).any(dim=0).nonzero().max().item()) + 1 if tokens.numel() else tokens.shape[1]
        tokens = tokens[:, :used]
        cast_dtype = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast_dtype)
        x = x + m.positional_embedding[:used].to(cast_dtype)
        x = m.transformer(x, attn_mask=m.attn_mask[:used, :used])
        x = m.ln_final(x)
        from open_clip.transformer import text_global_pool

        x = text_global_pool(x, tokens, pool, eos_token_id=getattr(m, "text_eos_id", None))
        proj = m.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
        return x

    # -- images ------------------------------------------------------------------------------
    def encode_image_batch(self, pixels) -> np.ndarray:
        """A preprocessed batch (N, 3, H, W) → L2-normalised float32 rows."""
        import torch

        with torch.no_grad():
            x = pixels.to(self.device, dtype=self._image_dtype or torch.float32, non_blocking=True)
            feats = self.model.encode_image(x)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False)


def weights_id(pretrained: str | None) -> str:
    """Identifies weights for cache keys: random, a tag, or a checkpoint file's name+size+mtime."""
    if pretrained is None:
        return "random"
    if os.path.isfile(pretrained):
        st = os.stat(pretrained)
        return f"file:{os.path.basename(pretrained)}:{st.st_size}:{int(st.st_mtime)}"
    return pretrained


@dataclass(frozen=True)
class ClipIdentity:
    """What the configured model is, found without loading it (cache keys need no weights)."""

    name: str                 # the open_clip name it is registered under
    arch_id: str
    pretrained: str | None    # resolved: None, a file, a folder or a tag

    def key(self, *parts: str) -> str:
        h = hashlib.sha256("\x00".join([self.arch_id, weights_id(self.pretrained), *parts]).encode())
        return h.hexdigest()[:16]


def identify(cfg, *, base_dir: Path | str | None = None) -> ClipIdentity:
    try:
        import open_clip
    except ImportError as exc:
        raise WorkbenchError(f"CLIP needs torch and open_clip ({exc}); install the extra: pip install "
                             "'taskgalaxy-workbench[clip]'") from None
    base = Path(base_dir) if base_dir is not None else None
    name = cfg.model
    arch_id = name
    if name.endswith(".json"):
        cfg_path = Path(os.path.expanduser(name))
        if not cfg_path.is_absolute() and base is not None:
            cfg_path = base / cfg_path
        if not cfg_path.is_file():
            raise WorkbenchError(f"[clip] model = {name!r}: no such model-config file ({cfg_path})")
        name = register_model_config(cfg_path)
        arch_id = name + ":" + hashlib.sha256(cfg_path.read_bytes()).hexdigest()[:12]
    elif not name.startswith(("hf-hub:", "local-dir:")) and name not in open_clip.list_models():
        raise WorkbenchError(f"[clip] model = {name!r} is not an open_clip model; pick one of "
                             "open_clip.list_models() (e.g. ViT-B-32, ViT-L-14) or a model-config .json file")
    pretrained = None if name.startswith("local-dir:") else _resolve_pretrained(
        name, cfg.pretrained, getattr(cfg, "allow_download", False), base)
    return ClipIdentity(name=name, arch_id=arch_id, pretrained=pretrained)


def load_clip(cfg, *, base_dir: Path | str | None = None) -> ClipModel:
    """Load the model `cfg` (a ClipConfig) names. base_dir: folder relative paths are read from."""
    ident = identify(cfg, base_dir=base_dir)
    import open_clip
    import torch

    name, arch_id, pretrained = ident.name, ident.arch_id, ident.pretrained
    device = resolve_device(cfg.device)
    try:
        # Random weights are seeded so that a re-run reuses consistent cached embeddings.
        with torch.random.fork_rng(devices=[]), _quiet_random_init():
            torch.manual_seed(0)
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise WorkbenchError(f"[clip] could not load model {name!r} with pretrained={pretrained!r}: "
                             f"{str(exc).splitlines()[0][:300]}; check that the checkpoint matches the model") from None
    model.eval()
    if pretrained is None:
        _warn_random_weights(arch_id)
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:  # HF tokenizers named by hub id fail offline
        raise WorkbenchError(f"[clip] cannot load the tokenizer of {name!r} offline ({str(exc)[:200]}); "
                             "use a model whose tokenizer is local") from None
    image_dtype = None
    if cfg.image_precision == "bf16":
        # The image tower gains ~4x on CPUs with AMX and on GPUs; the text tower stays fp32.
        model.visual.to(torch.bfloat16)
        image_dtype = torch.bfloat16
    ctx = int(getattr(tokenizer, "context_length", 0) or getattr(model, "context_length", 77))   # 0: unset
    return ClipModel(model=model, preprocess=preprocess, tokenizer=tokenizer, device=device, model_name=name,
                     pretrained=pretrained, image_precision=cfg.image_precision, context_length=ctx,
                     arch_id=arch_id, _image_dtype=image_dtype)


def model_key(clip: ClipModel, *parts: str) -> str:
    return ClipIdentity(clip.model_name, clip.arch_id or clip.model_name, clip.pretrained).key(*parts)
