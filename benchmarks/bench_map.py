"""`workbench map` after the first run: the UMAP projection now against the previous method, measured in the same run.

    python benchmarks/bench_map.py [--images 3000] [--tasks 500] [--repeat 3] [--workspace /tmp/ws-map]

A workspace of clustered 512-d CLIP-like vectors (images and task types, one set each) is written once; each
repeat runs `workbench map` in a fresh process with each method alternately, after deleting the stored projection,
so every run computes it. "previous" is the method before this benchmark: sklearn's brute-force kNN, 200 layout
epochs and umap imported only when fitting; "now" is `analysis/umap_fit.py` as it is. A warm-up run of each fills
numba's cache first (the runs after it load compiled code, as a user's second run does). Wall and CPU seconds (the
child's user + system) are printed per run, then the medians and the ratio previous / now; on a shared machine the
CPU figure is the steadier one.
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PREVIOUS = """
import sys
import numpy as np
from workbench.analysis import umap_fit

def sklearn_knn(x, k, metric):
    from sklearn.neighbors import NearestNeighbors
    dist, idx = NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(x).kneighbors(x)
    return idx.astype(np.int32), np.maximum(dist, 0).astype(np.float32)

umap_fit.exact_knn = sklearn_knn
umap_fit.n_epochs = lambda n: 200
umap_fit.preload = lambda: None
from workbench.apps.cli.main import main
sys.argv = ["workbench", *sys.argv[1:]]
main()
"""


def make_workspace(root: Path, n_images: int, n_tasks: int, dim: int = 512, seed: int = 0) -> None:
    """Clustered unit vectors as two embedding sets (image, text) of one model, as the embedding stage stores them."""
    from workbench.core.workspace import Workspace

    ws = Workspace.init(root, exist_ok=True)
    if ws.store.scalar("SELECT count(*) FROM embedding_sets"):
        return
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(60, dim))
    for key, kind, n in (("bench-img", "image", n_images), ("bench-txt", "text", n_tasks)):
        x = centres[rng.integers(0, len(centres), n)] + 0.8 * rng.normal(size=(n, dim))
        np.save(ws.arrays_dir / f"{key}.npy", x.astype(np.float32))
        with ws.store.write() as c:
            c.execute("INSERT INTO embedding_sets(key, kind, model, dim, array_file, created_at, updated_at) "
                      "VALUES (?, ?, 'bench', ?, ?, 't', 't')", (key, kind, dim, f"{key}.npy"))
            c.executemany("INSERT INTO embedding_rows(set_key, row, item_id) VALUES (?, ?, ?)",
                          [(key, i, f"{kind}-{i}") for i in range(n)])
    ws.close()


def run_map(root: Path, method: str) -> tuple[float, float, str]:
    """(wall s, child CPU s, the command's line) of one `workbench map` that computes the projection."""
    with sqlite3.connect(root / "workbench.sqlite") as conn:
        conn.execute("DELETE FROM projections")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = ([sys.executable, "-c", PREVIOUS] if method == "previous" else [sys.executable, "-m", "workbench"])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([*cmd, "map", str(root)], capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise SystemExit(f"{method}: workbench map failed:\n{out.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/bench-map-ws"))
    args = ap.parse_args(argv)
    make_workspace(args.workspace, args.images, args.tasks)
    for method in ("previous", "now"):
        run_map(args.workspace, method)   # warm-up: fills numba's cache where it is cold
    times: dict[str, list[tuple[float, float]]] = {"previous": [], "now": []}
    for i in range(args.repeat):
        for method in ("previous", "now"):
            wall, cpu, line = run_map(args.workspace, method)
            times[method].append((wall, cpu))
            print(f"run {i + 1} {method:8s} wall {wall:5.2f}s cpu {cpu:5.2f}s  | {line}")
    med = {m: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for m, v in times.items()}
    for m, (w, c) in med.items():
        print(f"median {m:8s} wall {w:5.2f}s cpu {c:5.2f}s")
    print(f"ratio previous/now: wall {med['previous'][0] / med['now'][0]:.2f}x, "
          f"cpu {med['previous'][1] / med['now'][1]:.2f}x ({args.images:,} images + {args.tasks:,} task types, "
          f"{os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
