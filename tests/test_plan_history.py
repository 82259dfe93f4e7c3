"""A plan that moves with no edit says which measured rate moved it (workbench/analysis/plan_history.py), and a
plan warns when the measured tokens per call are far from its own estimate (workbench/analysis/plan.py)."""

from conftest import run_cli
from workbench.analysis.plan import make_plan
from workbench.core.workspace import Workspace
from workbench.llm.cache import CallCache, CallRecord
from workbench.taxonomy.model import Taxonomy


def workspace(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    Taxonomy.of(ws).add_path("ocr~sign reading")
    Taxonomy.of(ws).add_path("counting~people")
    (ws.root / "workbench.toml").write_text((ws.root / "workbench.toml").read_text() + """
[endpoints.default]
base_url = "https://api.example.invalid/v1"
model = "gpt-4o-2024-08-06"
""")
    return Workspace.open(ws.root)


def measured_calls(ws, n, prompt_tokens):
    CallCache(ws.store).put_many(
        CallRecord(key=f"k{prompt_tokens}-{i}", stage="filter", endpoint="default", model="gpt-4o-2024-08-06",
                   request="{}", status="ok", raw_text="[]", prompt_tokens=prompt_tokens, completion_tokens=10,
                   latency_s=1.0, created_at="2026-01-01T00:00:00.000Z") for i in range(n))


def test_a_total_that_moves_with_no_edit_names_the_rate(tmp_path):
    ws = workspace(tmp_path)
    measured_calls(ws, 10, 900)
    r = run_cli("plan", str(ws.root), "--images", "1000", "--through", "filter")
    assert r.code == 0, r.err
    assert "since the last plan" not in r.out          # nothing to compare with yet
    measured_calls(ws, 30, 2000)                       # more of the pilot measured: longer prompts
    r = run_cli("plan", str(ws.root), "--images", "1000", "--through", "filter")
    assert r.code == 0, r.err
    assert "no edit (same task types, images, settings and rows)" in r.out, r.out
    assert "measured rates that moved: filter prompt tokens per call 900 -> 1,725" in r.out, r.out
    # The same plan again: nothing moved, nothing said.
    r = run_cli("plan", str(ws.root), "--images", "1000", "--through", "filter")
    assert "since the last plan" not in r.out
    # An edit is named as such: a new leaf waits for expansion (one more call).
    assert run_cli("plan", str(ws.root), "--through", "expand").code == 0
    Taxonomy.of(ws).add_path("counting~cars")
    r = run_cli("plan", str(ws.root), "--through", "expand")
    assert "edits: task types 2 -> 3; expand calls on the rows there now 2 -> 3" in r.out, r.out


def test_measured_tokens_far_from_the_estimate_warn(tmp_path):
    ws = workspace(tmp_path)
    measured_calls(ws, 10, 44 * 1000)
    st = {s.stage: s for s in make_plan(ws, images=100, through="filter").stages}
    (w,) = st["filter"].warnings
    assert "measured input tokens per call (44,000" in w and "the plan uses the measured figure" in w
    assert "WARNING: measured input tokens" in make_plan(ws, images=100, through="filter").table()
    assert not st["expand"].warnings            # nothing measured for expansion: nothing to compare
