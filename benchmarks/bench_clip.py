"""CLIP stage benchmarks; each prints a ratio against a baseline measured in the same run.

(a) End-to-end image matching (DataLoader decode + preprocess + encode + durable writes + top-k +
    storing matches, through `embed_images` and `match`) in images/s, over the bare batched encoder
    forward pass on the same images, preprocessed beforehand. Goal >= 0.9.
(b) Text-embedding task paths batched (`embed_texts_clip`: length-sorted batches, only the used
    token columns) vs one at a time at full context, as the paper's script does. Goal >= 10x.
    The one-at-a-time baseline is timed on a subset and extrapolated (printed as such).
(c) Top-k for 100k images x 20k task types (512-d) in chunks: time and peak memory.

Random weights (same cost as real ones), no download. Usage:
    .venv/bin/python benchmarks/bench_clip.py [--model ViT-B-32] [--text-model ViT-S-32-alt] [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from workbench.taxonomy.model import Taxonomy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _set_clip(ws, **values) -> None:
    import re

    cfg = ws.root / "workbench.toml"
    text = cfg.read_text()
    for key, val in values.items():
        lit = f'"{val}"' if isinstance(val, str) else str(val).lower() if isinstance(val, bool) else str(val)
        text, n = re.subn(rf"^{key} = .*$", f"{key} = {lit}", text, count=1, flags=re.M)
        if not n:
            text = text.replace("[clip]\n", f"[clip]\n{key} = {lit}\n", 1)
    cfg.write_text(text)
    ws.reload_config()


def _photos(folder: Path, n: int) -> None:
    """n distinct 640x480 JPEGs cut from the photographs scikit-image bundles."""
    import skimage.data
    from PIL import Image

    srcs = [getattr(skimage.data, s)() for s in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")]
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = Image.fromarray(srcs[i % len(srcs)]).resize((800, 600))
        x, y = rng.randint(0, 160), rng.randint(0, 120)
        src.crop((x, y, x + 640, y + 480)).save(folder / f"p{i:05d}.jpg", quality=90)


def bench_images(model: str, n: int, precision: str, workers: int) -> float:
    import torch

    from workbench.core.workspace import Workspace
    from workbench.stages.embed.clip import load_clip
    from workbench.stages.embed.stage import embed_images
    from workbench.stages.images.register import open_rgb, register_images
    from workbench.stages.match.stage import match
    from workbench.taxonomy.io import load_seed

    tmp = Path(tempfile.mkdtemp(prefix="bench-clip-"))
    _photos(tmp / "imgs", n)
    ws = Workspace.init(tmp / "ws")
    load_seed(Taxonomy.of(ws))
    _set_clip(ws, model=model, pretrained="", device="cpu", batch_size=32, num_workers=workers,
              image_precision=precision)
    register_images(ws, [tmp / "imgs"])
    clip = load_clip(ws.config.clip, base_dir=ws.root)
    from workbench.stages.embed.stage import embed_texts_clip

    embed_texts_clip(ws, clip=clip)   # task texts are cached; (a) is about images

    # baseline: the encoder alone on the same images, preprocessed beforehand (not timed)
    paths = sorted((tmp / "imgs").glob("*.jpg"))
    pixels = torch.stack([clip.preprocess(open_rgb(p)) for p in paths])
    clip.encode_image_batch(pixels[:32])   # warm-up at the batch shape (oneDNN builds kernels per shape)

    def forward() -> float:
        t0 = time.perf_counter()
        for i in range(0, len(pixels), 32):
            clip.encode_image_batch(pixels[i:i + 32])
        return time.perf_counter() - t0

    # bare before and after the end-to-end run, the faster one counts (conservative on a shared machine)
    bare1 = forward()
    t0 = time.perf_counter()
    rep = embed_images(ws, clip=clip)
    m = match(ws, embed=False)
    e2e = time.perf_counter() - t0
    bare = min(bare1, forward())
    assert rep.computed == n and m.images == n
    ratio = (n / e2e) / (n / bare)
    print(f"(a) {model} {precision}, {n} images 640x480 JPEG, batch 32, {workers} DataLoader workers, "
          f"{torch.get_num_threads()} torch threads:")
    print(f"    bare forward {n / bare:7.1f} images/s | end-to-end embed+match {n / e2e:7.1f} images/s | "
          f"ratio {ratio:.2f} (goal >= 0.9)")
    return ratio


def _task_paths(n: int) -> list[str]:
    from workbench.taxonomy.io import seed_file

    rng = random.Random(1)
    seeds = [ln.strip() for ln in seed_file().read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    verbs = ["identify", "count", "compare", "describe", "locate", "explain", "estimate", "read", "classify", "infer"]
    objs = ["objects in cluttered scenes", "text on street signs", "values in a bar chart", "the mood of people",
            "tools on a workbench", "damage on a vehicle", "species of birds", "steps of a recipe",
            "symbols on a map", "relations between people", "colours of clothing", "the time on a clock"]
    out = []
    for i in range(n):
        base = seeds[i % len(seeds)]
        out.append(f"{base}~{rng.choice(verbs)} {rng.choice(objs)} ({i})")
    return out


def bench_texts(model: str, n: int, sample: int) -> float:
    import torch

    from workbench.core.workspace import Workspace
    from workbench.stages.embed.clip import load_clip
    from workbench.stages.embed.stage import embed_texts_clip
    from workbench.taxonomy.io import import_taxonomy

    tmp = Path(tempfile.mkdtemp(prefix="bench-text-"))
    ws = Workspace.init(tmp / "ws")
    paths = _task_paths(n)
    (tmp / "tasktype.txt").write_text("\n".join(paths) + "\n")
    import_taxonomy(Taxonomy.of(ws), tmp / "tasktype.txt", fmt="txt")
    _set_clip(ws, model=model, pretrained="", device="cpu", batch_size=256)
    clip = load_clip(ws.config.clip, base_dir=ws.root)
    n_leaves = len(Taxonomy.of(ws).leaves())

    # baseline: the paper's loop, one task path at a time through the stock encode_text (full context)
    texts = [p for _, p in Taxonomy.of(ws).leaves()]
    sub = random.Random(2).sample(texts, min(sample, len(texts)))
    with torch.no_grad():
        clip.model.encode_text(clip.tokenizer([sub[0]]))
        t0 = time.perf_counter()
        for t in sub:
            f = clip.model.encode_text(clip.tokenizer([t]))
            f / f.norm(dim=-1, keepdim=True)
        one = (time.perf_counter() - t0) / len(sub)

    t0 = time.perf_counter()
    rep = embed_texts_clip(ws, clip=clip)
    batched = time.perf_counter() - t0
    assert rep.computed == n_leaves
    ratio = (one * n_leaves) / batched
    print(f"(b) {model} text tower, {n_leaves} task paths (3 levels, median "
          f"{int(np.median([clip.token_count(t) for t in texts]))} tokens):")
    print(f"    one at a time {1 / one:7.1f} texts/s (timed on {len(sub)}, extrapolated: {one * n_leaves:6.1f} s) | "
          f"batched {n_leaves / batched:7.1f} texts/s ({batched:5.1f} s, incl. durable writes) | "
          f"ratio {ratio:.1f}x (goal >= 10x)")
    return ratio


class _PeakRSS:
    """Samples this process's resident memory every few ms (torch allocations are invisible to tracemalloc)."""

    def __init__(self):
        self.peak = self._rss()
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.base = self._rss()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self.t.join()


def bench_topk(n_img: int, n_txt: int, dim: int, k: int) -> None:
    from workbench.stages.match.stage import chunk_rows, topk_cosine

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_img, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t = rng.standard_normal((n_txt, dim), dtype=np.float32)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    chunk = chunk_rows(n_txt, 512, 4096)
    idx_all = np.empty((n_img, k), np.int64)
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        for start, idx, _vals in topk_cosine(x, t, k, chunk=chunk):
            idx_all[start:start + len(idx)] = idx
        secs = time.perf_counter() - t0
    sample = rng.choice(n_img, 200, replace=False)
    exact = np.argsort(-(x[sample].astype(np.float64) @ t.astype(np.float64).T), axis=1)[:, :k]
    agree = float(np.mean(exact == idx_all[sample]))
    full = n_img * n_txt * 4 / 2**30
    print(f"(c) top-{k} of {n_img:,} images x {n_txt:,} task types x {dim} dims, fp32, chunks of {chunk} rows:")
    peak_mib = (mem.peak - mem.base) / 2**20
    print(f"    {secs:6.1f} s ({n_img / secs:,.0f} images/s), peak extra memory {peak_mib:,.0f} MiB "
          f"(the full score matrix would be {full:.1f} GiB: {full * 2**10 / max(1, peak_mib):.0f}x more); "
          f"agreement with float64 brute force on 200 rows: {agree:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32", help="open_clip model for (a) (random weights)")
    ap.add_argument("--text-model", default="ViT-S-32-alt", help="open_clip model for (b) (random weights)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="image tower precision for (a)")
    ap.add_argument("--images", type=int, default=128, help="images for (a)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for (a)")
    ap.add_argument("--texts", type=int, default=5000, help="task paths for (b)")
    ap.add_argument("--one-at-a-time-sample", type=int, default=200, help="texts timed one at a time in (b)")
    ap.add_argument("--topk-images", type=int, default=100_000)
    ap.add_argument("--topk-texts", type=int, default=20_000)
    ap.add_argument("--only", choices=["a", "b", "c"], action="append", help="run only these parts")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.images, args.texts, args.one_at_a_time_sample = 16, 300, 20
        args.topk_images, args.topk_texts = 5000, 2000
    parts = args.only or ["a", "b", "c"]
    import logging

    logging.getLogger().setLevel(logging.ERROR)   # open_clip warns that random weights are random
    if "a" in parts:
        bench_images(args.model, args.images, args.precision, args.workers)
    if "b" in parts:
        bench_texts(args.text_model, args.texts, args.one_at_a_time_sample)
    if "c" in parts:
        bench_topk(args.topk_images, args.topk_texts, 512, 5)


if __name__ == "__main__":
    main()
