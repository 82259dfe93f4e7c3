"""Vote join + selection at paper scale vs the paper's nested-loop join.

Ours: 400k samples × 3 referees in a workspace; one GROUP BY join (`vote_table`) + selection
(`choose`), timed together. Baseline: a faithful reimplementation of the original scripts' join —
for every entry of referee A, scan referee B's and C's lists for the entry with the same image and
question — at 20k samples (it is O(N²); also extrapolated to 400k). Prints times and ratios.

    .venv/bin/python benchmarks/bench_votes.py [--samples 400000] [--paper-samples 20000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.core.workspace import Workspace
from workbench.stages.select.stage import choose, vote_table
from workbench.taxonomy.model import Taxonomy


def build_workspace(root: Path, n_samples: int, n_tasks: int = 19_227, seed: int = 0) -> Workspace:
    ws = Workspace.init(root)
    rng = random.Random(seed)
    tasks = [f"domain {i % 60}~area {i % 900}~task {i}" for i in range(n_tasks)]
    ids, _ = Taxonomy.of(ws).ensure_paths([t.split("~") for t in tasks], origin="imported", status="accepted")
    node_ids = list(ids.values())
    with ws.store.write() as c:
        c.executemany("INSERT INTO images(id, path, root, source, width, height, format, added_at) "
                      "VALUES (?, ?, '/data', 'bench', 1, 1, 'JPEG', 'now')",
                      ((f"img{i}", f"{i}.jpg") for i in range(n_samples // 4 + 1)))
        samples = [(f"s{i:07d}", f"img{i // 4}", node_ids[rng.randrange(len(node_ids))], f"q{i}", f"a{i}")
                   for i in range(n_samples)]
        c.executemany("INSERT INTO samples(id, image_id, node_id, question, answer, status, created_at) "
                      "VALUES (?,?,?,?,?, 'ok', 'now')", samples)
        for ref in ("r1", "r2", "r3"):
            c.executemany("INSERT INTO votes(sample_id, referee, vote, valid, raw_text) VALUES (?,?,?,1,?)",
                          ((s[0], ref, v, str(v)) for s in samples for v in [int(rng.random() < 0.8)]))
    return ws


def paper_join(n: int, seed: int = 0) -> float:
    """The original scripts' pattern: three referee result lists joined by nested loops."""
    rng = random.Random(seed)
    base = [{"image": f"img{i // 4}", "task_type": f"t{i % 997}", "question": f"q{i}"} for i in range(n)]
    lists = []
    for _ in range(3):
        lst = [dict(b, score=int(rng.random() < 0.8)) for b in base]
        rng.shuffle(lst)
        lists.append(lst)
    a, b, c = lists
    t0 = time.perf_counter()
    kept = []
    for x in a:
        total = x["score"]
        for y in b:
            if y["image"] == x["image"] and y["question"] == x["question"]:
                total += y["score"]
                break
        for z in c:
            if z["image"] == x["image"] and z["question"] == x["question"]:
                total += z["score"]
                break
        if total >= 2:
            kept.append(x)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=400_000)
    ap.add_argument("--paper-samples", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ws = build_workspace(Path(tmp) / "ws", args.samples)
        print(f"built workspace: {args.samples} samples × 3 referees in {time.perf_counter() - t0:.1f}s (not timed)")
        t0 = time.perf_counter()
        table = vote_table(ws.store)
        t_join = time.perf_counter() - t0
        out, _ = choose(table, min_votes=2, max_per_task=50, budget=args.samples // 2, seed=0)
        t_ours = time.perf_counter() - t0
        print(f"ours: join {t_join:.2f}s + selection {t_ours - t_join:.2f}s = {t_ours:.2f}s for {args.samples} "
              f"samples ({int(out.selected.sum())} selected); goal <= 5 s")
        ws.close()
    t_paper = paper_join(args.paper_samples)
    scale = (args.samples / args.paper_samples) ** 2
    print(f"paper nested-loop join: {t_paper:.2f}s for {args.paper_samples} samples "
          f"(≈ {t_paper * scale / 3600:.1f} h extrapolated to {args.samples}, O(N²))")
    per_ours = t_ours / args.samples
    per_paper = t_paper / args.paper_samples
    print(f"ratio per sample, paper@{args.paper_samples} / ours@{args.samples}: {per_paper / per_ours:.0f}×; "
          f"extrapolated at {args.samples}: {t_paper * scale / t_ours:.0f}×")


if __name__ == "__main__":
    main()
