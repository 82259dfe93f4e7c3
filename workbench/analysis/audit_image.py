"""Image side of an audit: items whose image file resolves are also assigned by the workspace's CLIP.

The item's `image` field (LLaVA; a list: the first) is looked up relative to `--image-root`, else the
dataset file's folder. Found images are opened and preprocessed with the embed stage's own code
(`images.register.open_rgb`, `embed.stage.bound_aspect`, the model's preprocess) and embedded with the
configured CLIP (`embed.clip.load_clip`: the weights of `[clip]`); task types are the CLIP text embeddings of
their rendered `[clip] template` (`embed.stage.current_task_texts`). Top-k per image is stored beside the
text assignment as `image.npz` (item positions, columns, scores, the CLIP model key) in the audit's folder;
`image_summary` says how many items had an image and how often the text and image top-1 agree (and
whether the image top-1 is in the text top-k).

Fusion: every imaged item also gets one fused top-k (`fuse`), which `audit_items`, the summary, export and
the Gaps page read instead of the text's while the taxonomy is the one it was made with (the report says
which was used, `audit.fused_status`). The rule, fixed rather than fitted (no real CLIP weights here to
measure it with; the tests check the mechanics with a tiny random CLIP): the image's top-k cosines become
probabilities with CLIP's own logit scale (`IMAGE_TEMP` = 100), and each candidate's fused score is its text
score plus `image_weight()` x that probability; a task type outside the text top-k takes the text's k-th
score. `image_weight()` is the high-confidence margin calibrated on the dev split (`audit_eval.json`):
however sure the image is, it overturns only a text top-1 that was not high confidence, and an item whose
text is ambiguous (a near-zero margin) takes the image's choice.

Missing files are counted, not errors (an SFT dump often ships without its images). Resumable at the
granularity of a whole pass: `image.npz` is written once at the end (images are the slow part only for
large sets; run the text audit first, images after).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from workbench.analysis.audit import IMAGE_FILE, _meta, assign, load_assignments
from workbench.analysis.audit_quality import load_results
from workbench.analysis.audit_read import image_of, records
from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.stages.embed.clip import identify, load_clip, model_key
from workbench.stages.embed.stage import _input_side, bound_aspect, current_task_texts
from workbench.stages.images.register import ImageError, open_rgb
from workbench.taxonomy.model import Taxonomy
from workbench.taxonomy.names import SEP

BATCH = 64
IMAGE_TEMP = 100.0          # CLIP's trained logit scale: image cosines -> probabilities
DEFAULT_IMAGE_WEIGHT = 0.08  # without a stored calibration (about the dev split's high-confidence margin)


def image_weight() -> float:
    """What a sure image adds to a task type's text score: the dev split's high-confidence margin."""
    cut = ((load_results() or {}).get("confidence") or {}).get("high")
    return float(cut) if cut is not None and 0 < cut < 1 else DEFAULT_IMAGE_WEIGHT


def fuse(tcols: np.ndarray, tscores: np.ndarray, icols: np.ndarray, iscores: np.ndarray,
         weight: float | None = None, temp: float = IMAGE_TEMP) -> tuple[np.ndarray, np.ndarray]:
    """Per item (rows aligned): the fused top-k (k of the text side) over the union of both top-k lists:
    text score (the text's k-th score outside its top-k) + weight x softmax(temp x image cosine) (0 outside
    the image top-k)."""
    weight = image_weight() if weight is None else weight
    n, k = tcols.shape
    if not n:
        return tcols.copy(), tscores.copy()
    cand = np.concatenate([tcols, icols], axis=1)                               # (n, 2k)
    in_text = cand[:, :, None] == tcols[:, None, :]                             # (n, 2k, k)
    ts = np.where(in_text.any(2), (in_text * tscores[:, None, :]).sum(2), tscores[:, -1:])
    z = temp * (iscores - iscores.max(axis=1, keepdims=True))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    ps = ((cand[:, :, None] == icols[:, None, :]) * p[:, None, :]).sum(2)
    fused = ts + weight * ps
    fused[:, k:][in_text[:, k:].any(2)] = -np.inf                               # counted once, in the text half
    order = np.argsort(-fused, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(cand, order, axis=1).astype(np.int32),
            np.take_along_axis(fused, order, axis=1).astype(np.float32))


def image_paths(dataset: Path, fmt: str, image_root: Path | None) -> list[Path | None]:
    """Per item: the resolved image file, or None (no image field, or no such file)."""
    base = Path(image_root) if image_root else (dataset if dataset.is_dir() else dataset.parent)
    out: list[Path | None] = []
    for rec in records(dataset, fmt):
        rel = image_of(rec) if isinstance(rec, dict) else None
        p = None
        if rel:
            cand = Path(os.path.expanduser(rel))
            cand = cand if cand.is_absolute() else base / cand
            p = cand if cand.is_file() else None
        out.append(p)
    return out


def assign_images(ws: Workspace, name: str, *, image_root: Path | None = None, top_k: int | None = None,
                  clip=None) -> dict:
    """CLIP top-k task types for every item of audit `name` whose image resolves; stored as image.npz.
    Returns image_summary(ws, name)."""
    import torch


    array_dir, items, done, _ = _meta(ws, name)
    source, fmt, k_text = ws.store.query("SELECT source, format, top_k FROM audit_datasets WHERE name=?",
                                         (name,))[0]
    if image_root is not None and not Path(image_root).is_dir():
        raise WorkbenchError(f"--image-root {image_root}: no such folder")
    paths = image_paths(Path(source), fmt, image_root)
    if len(paths) != items:
        raise WorkbenchError(f"{source}: now {len(paths):,} items, the audit {name!r} had {items:,}; audit it again")
    d = ws.root / array_dir
    leaves = json.loads((d / "tasks.json").read_text())
    texts = {nid: text for nid, text, _ in current_task_texts(ws)}
    missing = [n for n in leaves if n not in texts]
    if missing:
        raise WorkbenchError(f"the taxonomy changed since audit {name!r} ({len(missing)} task type(s) gone); "
                             "run `workbench audit` again first")
    _, tcols, tscores, _ = load_assignments(ws, name, fused=False)
    if len(tcols) != items:
        raise WorkbenchError(f"audit {name!r}: {len(tcols):,} of {items:,} item(s) assigned against the current "
                             "task types; run `workbench audit` again first (it resumes), then the images")
    clip = clip or load_clip(ws.config.clip, base_dir=ws.root)
    tvecs, _ = clip.encode_texts([texts[n] for n in leaves])
    todo = [(i, p) for i, p in enumerate(paths) if p is not None]
    min_side = _input_side(clip.preprocess)
    pos, vecs, bad = [], [], 0
    for b in range(0, len(todo), BATCH):
        ids, pix = [], []
        for i, p in todo[b:b + BATCH]:
            try:
                pix.append(clip.preprocess(bound_aspect(open_rgb(p, min_side=min_side))))
                ids.append(i)
            except ImageError:
                bad += 1
        if pix:
            vecs.append(clip.encode_image_batch(torch.stack(pix)))
            pos.extend(ids)
    k = min(top_k or k_text, len(leaves))
    if vecs:
        cols, scores = assign(np.concatenate(vecs), tvecs, k)
    else:
        cols, scores = np.zeros((0, k), np.int32), np.zeros((0, k), np.float32)
    item = np.asarray(pos, np.int64)
    fcols, fscores = fuse(tcols[item], tscores[item], cols, scores)
    key = ws.store.query("SELECT tasks_key FROM audit_datasets WHERE name=?", (name,))[0][0]
    tmp = d / "image.tmp.npz"
    np.savez(tmp, item=item, cols=cols, scores=scores.astype(np.float16),
             model=np.asarray(model_key(clip, "image")), unreadable=np.asarray(bad),
             fcols=fcols, fscores=fscores.astype(np.float32), fkey=np.asarray(key))
    os.replace(tmp, d / IMAGE_FILE)
    return image_summary(ws, name)


def load_image_assignments(ws: Workspace, name: str):
    """(item positions, columns (n, k), scores (n, k), CLIP model key, unreadable count) or None."""
    f = ws.root / _meta(ws, name)[0] / IMAGE_FILE
    if not f.exists():
        return None
    with np.load(f) as z:
        return z["item"], z["cols"], z["scores"].astype(np.float32), str(z["model"]), int(z["unreadable"])


def image_summary(ws: Workspace, name: str) -> dict:
    """{"with_image", "unreadable", "top1_agree" (share of imaged items whose text and image top-1 are the
    same task type), "image_top1_in_text_topk", "category_agree", "clip_model"}; {} without image.npz."""
    got = load_image_assignments(ws, name)
    if got is None:
        return {}
    item, icols, _, model, bad = got
    leaves, tcols, _, _ = load_assignments(ws, name, fused=False)
    out = {"with_image": int(len(item)), "unreadable": bad, "clip_model": model, "items": int(len(tcols))}
    if len(item):
        t = tcols[item]
        paths = Taxonomy.of(ws).index().paths
        cat = np.array([paths.get(n, "(removed)").split(SEP)[0] for n in leaves], dtype=object)
        out["top1_agree"] = float((t[:, 0] == icols[:, 0]).mean())
        out["image_top1_in_text_topk"] = float((t == icols[:, :1]).any(axis=1).mean())
        out["category_agree"] = float((cat[t[:, 0]] == cat[icols[:, 0]]).mean())
    return out


def clip_ready(ws: Workspace) -> str | None:
    """None when the configured CLIP can load without a download, else why not (weights missing, no
    open_clip)."""
    try:
        ident = identify(ws.config.clip, base_dir=ws.root)
    except WorkbenchError as exc:
        return str(exc).splitlines()[0]
    w = ident.pretrained
    if w is None or w.startswith("local-dir:") or os.path.exists(w):   # random (configured), or on disk
        return None
    return (f"[clip] pretrained = {w!r} would be downloaded (allow_download); images are assigned only with "
            "local weights")


def store_summary(ws: Workspace, name: str, image: dict) -> None:
    """Put the image figures into the audit's stored summary under "image"."""
    row = ws.store.query("SELECT summary FROM audit_datasets WHERE name=?", (name,))
    s = json.loads(row[0][0]) if row and row[0][0] else {}
    s["image"] = image
    with ws.store.write() as c:
        c.execute("UPDATE audit_datasets SET summary=?, updated_at=? WHERE name=?", (json.dumps(s), utcnow(), name))
