"""Local engine vs Ray engine on the same job: embed + match N generated images with the tiny CLIP.

    .venv/bin/python benchmarks/bench_ray.py [--images 300] [--address HOST:6379]

Prints Ray's start-up cost (a private loopback Ray, or joining --address), each engine's embed and match
times, and the ratio Ray/local (both measured in this run; Ray's times exclude its start-up, which is
printed on its own). Results are checked equal (same top-k).

What changes on a cluster: on one machine Ray can only add overhead (serialising pixels and rows through
the object store, actor start-up, ~20 s to start) against the local engine's DataLoader + one model,
which already uses every core. Ray pays off when the work exceeds one machine: decoding millions of
images spread over many nodes' CPUs, one CLIP actor per GPU across nodes, and VLM calls fanned out to
workers next to many endpoints. The driver still commits every block to the workspace, so its write
rate (one chunk file + one transaction per block) is the ceiling; raise [clip] batch_size on a cluster.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np

from clip_fixtures import make_images, set_config_section, use_tiny_clip
from workbench.core.workspace import Workspace
from workbench.engine.ray_engine import RayEngine
from workbench.stages.embed.stage import embed_images, embed_texts_clip
from workbench.stages.images.register import register_images
from workbench.stages.match.stage import match
from workbench.taxonomy.io import load_seed
from workbench.taxonomy.model import Taxonomy


def _ws(root: Path, images: Path) -> Workspace:
    ws = Workspace.init(root)
    load_seed(Taxonomy.of(ws))
    use_tiny_clip(ws, batch_size=64)
    set_config_section(ws, "match", k=5)
    register_images(ws, [images])
    embed_texts_clip(ws)
    return ws


def _job(ws: Workspace, engine: RayEngine | None) -> tuple[float, float]:
    t0 = time.perf_counter()
    embed_images(ws, engine=engine)
    t1 = time.perf_counter()
    match(ws, embed=False, engine=engine)
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--address", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_images(tmp / "imgs", args.images)
        local, remote = _ws(tmp / "local", tmp / "imgs"), _ws(tmp / "ray", tmp / "imgs")
        le, lm = _job(local, None)
        engine = RayEngine(address=args.address, temp_dir=None if args.address else str(tmp / "ray-tmp"))
        t0 = time.perf_counter()
        engine.start()
        startup = time.perf_counter() - t0
        try:
            re_, rm = _job(remote, engine)
        finally:
            engine.shutdown()
        same = (local.store.query("SELECT image_id, rank, node_id FROM matches ORDER BY 1, 2")
                == remote.store.query("SELECT image_id, rank, node_id FROM matches ORDER BY 1, 2"))
        print(f"{args.images} images, cluster: {engine.describe()}")
        print(f"ray start-up: {startup:.1f}s")
        print(f"embed: local {le:.2f}s, ray {re_:.2f}s, ratio ray/local {re_ / le:.1f}x")
        print(f"match: local {lm:.2f}s, ray {rm:.2f}s, ratio ray/local {rm / max(lm, 1e-9):.1f}x")
        tot_l, tot_r = le + lm, re_ + rm
        print(f"job:   local {tot_l:.2f}s, ray {tot_r:.2f}s (+{startup:.1f}s start-up), ratio ray/local "
              f"{tot_r / tot_l:.1f}x ({(tot_r + startup) / tot_l:.1f}x with start-up); same top-k: {same}")
        assert same and np.isfinite(tot_r)


if __name__ == "__main__":
    main()
