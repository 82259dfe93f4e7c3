"""Run planner at paper scale: `make_plan` for 825,000 images over 19,227 task types (goal: <= 10 s).

    python benchmarks/bench_plan.py [WORKSPACE]     # default /tmp/ws-plan-paper, built if missing (~80 s)

The workspace comes from `make_paper_scale_workspace.py` (100k registered images, 500k matches, 413k samples,
1.24M votes, 6,000 measured LLM calls); this script adds three referees to its workbench.toml (the referees
the synthetic votes name; their endpoints have no price, so their cost shows as unknown) so every stage is
planned. It prints the plan's wall time (fresh `Workspace.open` + `make_plan(images=825000)`, median of 3)
and the ratio against a baseline measured in the same run: one bare `SELECT count(*)` over each table the
plan reads (images, matches, filter_decisions, samples, votes, llm_calls, nodes), and one grouped pass over
the four big tables (`GROUPED`: what any per-task-type figure must at least read).
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

IMAGES = 825_000
# The second baseline: one grouped pass over the big tables the plan aggregates (what any per-task-type
# figure must at least read).
GROUPED = ("SELECT node_id, count(*) FROM matches GROUP BY node_id",
           "SELECT image_id, sum(kept) FROM filter_decisions GROUP BY image_id",
           "SELECT node_id, count(*) FROM samples GROUP BY node_id",
           "SELECT sample_id, sum(vote) FROM votes GROUP BY sample_id")
TABLES = ("images", "matches", "filter_decisions", "samples", "votes", "llm_calls", "nodes")
REFEREES = """
[endpoints.glm4v]
base_url = "http://judge-1.example.invalid:8000/v1"
model = "glm-4v-9b"
max_concurrency = 32

[endpoints.internvl_chat]
base_url = "http://judge-2.example.invalid:8000/v1"
model = "InternVL-Chat-V1-5"
max_concurrency = 32

[endpoints.internvl2]
base_url = "http://judge-3.example.invalid:8000/v1"
model = "InternVL2-26B"
max_concurrency = 32

[[referees]]
name = "glm4v"
endpoint = "glm4v"

[[referees]]
name = "internvl-chat-v1.5"
endpoint = "internvl_chat"

[[referees]]
name = "internvl2-26b"
endpoint = "internvl2"
"""


def prepare(root: Path) -> None:
    if not (root / "workbench.toml").exists():
        from make_paper_scale_workspace import PAPER, build

        build(root, PAPER)
    cfg = root / "workbench.toml"
    text = cfg.read_text()
    if not re.search(r"^\[\[referees\]\]", text, re.M):
        cfg.write_text(text + REFEREES)


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]) if argv else Path("/tmp/ws-plan-paper")
    prepare(root)
    from workbench.analysis.plan import make_plan
    from workbench.core.workspace import Workspace

    def baseline():
        ws = Workspace.open(root)
        return [ws.store.scalar(f"SELECT count(*) FROM {t}") for t in TABLES]

    def grouped():
        ws = Workspace.open(root)
        return [len(ws.store.query(q)) for q in GROUPED]

    def plan():
        return make_plan(Workspace.open(root), images=IMAGES)

    make_plan(Workspace.open(root), images=1)      # imports and first-touch of the file, outside the timing
    base_s, counts = timed(baseline)
    group_s, _ = timed(grouped)
    plan_s, p = timed(plan)
    print(p.table())
    print()
    print(f"tables: {dict(zip(TABLES, counts))}")
    print(f"plan for {IMAGES:,} images over {p.task_types:,} task types: {plan_s:.2f} s (goal <= 10 s); "
          f"baseline count(*) over {len(TABLES)} tables: {base_s:.2f} s (ratio {plan_s / base_s:.0f}x); one grouped "
          f"pass over matches, filter_decisions, samples, votes: {group_s:.2f} s (ratio {plan_s / group_s:.1f}x)")
    return 0 if plan_s <= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
