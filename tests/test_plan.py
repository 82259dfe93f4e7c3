"""The run planner (workbench/analysis/plan.py): a plan made from a pilot predicts the full run.

A pilot of 50 images goes through CLIP (tiny random-weight model), filter, Q&A and two referees against the
scripted server; the plan for 500 images is then compared with what the run on all 500 actually calls.
Replies and token usage depend on the image's index (encoded in its colour) through known distributions:
the filter keeps i % 3 of the 3 candidates, referee a votes 1 unless i % 4 == 0, referee b votes 1 on even i.
"""

import io
import json
import re

import pytest
from PIL import Image

from clip_fixtures import set_config_section, use_tiny_clip
from conftest import run_cli
from openai_server import OpenAIServer, Reply
from workbench.analysis.plan import image_tokens, make_plan
from workbench.core.workspace import Workspace
from workbench.taxonomy.model import Taxonomy

N_PILOT, N_ALL = 50, 500
LLM_STAGES = ("filter", "qa", "referee:a", "referee:b")


def index_of(req) -> int:
    import base64

    data = base64.b64decode(req.images[0].split(",", 1)[1])
    r, g, _ = Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0))
    return r + 256 * g


def script(req):
    i = index_of(req)
    listed = re.findall(r"^- (.+)$", req.text, re.M)
    if "candidate task types" in req.text:
        kept = listed[: i % 3]
        return Reply(json.dumps(kept), prompt_tokens=900 + 7 * (i % 5), completion_tokens=10 + 15 * len(kept))
    if "write one complex question" in req.text:
        items = [{"task_type": t, "question": f"What {t} is in image {i}?", "answer": f"Answer {i}"} for t in listed]
        return Reply(json.dumps(items), prompt_tokens=1000 + 50 * len(listed),
                     completion_tokens=80 * len(listed) + 5 * (i % 4))
    vote = (i % 4 != 0) if req.model == "judge-a" else (i % 2 == 0)
    return Reply("1" if vote else "0", prompt_tokens=700 + i % 3, completion_tokens=1)


def make_images(folder, lo, hi):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(lo, hi):
        Image.new("RGB", (24, 16), (i % 256, i // 256, 77)).save(folder / f"im{i:03d}.png")
    return folder


def make_workspace(tmp_path, base_url):
    ws = Workspace.init(tmp_path / "ws")
    for a in range(4):
        for b in range(3):
            Taxonomy.of(ws).add_path(f"category {a}~task type {a}-{b}")
    use_tiny_clip(ws)
    set_config_section(ws, "match", k=3)
    cfg = (ws.root / "workbench.toml").read_text()
    cfg += f"""
[endpoints.vlm]
base_url = "{base_url}"
model = "vlm"
max_concurrency = 16
price_input_per_mtok = 2.0
price_output_per_mtok = 8.0

[endpoints.judge_a]
base_url = "{base_url}"
model = "judge-a"
max_concurrency = 16

[endpoints.judge_b]
base_url = "{base_url}"
model = "judge-b"
max_concurrency = 16

[filter]
endpoint = "vlm"

[qa]
endpoint = "vlm"

[[referees]]
name = "a"
endpoint = "judge_a"

[[referees]]
name = "b"
endpoint = "judge_b"
"""
    (ws.root / "workbench.toml").write_text(cfg)
    return Workspace.open(ws.root)


def run_all(ws):
    from workbench.stages.filter.stage import run_filter
    from workbench.stages.match.stage import match
    from workbench.stages.qa.stage import run_qa
    from workbench.stages.referee.stage import run_referees

    match(ws)
    run_filter(ws, progress=False)
    run_qa(ws, progress=False)
    run_referees(ws, progress=False, adaptive=ws.config.referee.adaptive)


def usage(ws, exclude=()) -> dict:
    out = {}
    for r in ws.store.query("SELECT key, stage, prompt_tokens, completion_tokens FROM llm_calls WHERE status='ok'"):
        if r[0] in exclude:
            continue
        c = out.setdefault(r[1], [0, 0, 0])
        c[0] += 1
        c[1] += r[2]
        c[2] += r[3]
    return out


def by_stage(plan):
    return {s.stage: s for s in plan.stages}


@pytest.mark.timeout(240)
def test_pilot_plan_predicts_the_full_run(tmp_path):
    from workbench.stages.images.register import register_images

    with OpenAIServer(script, models=("vlm", "judge-a", "judge-b")) as server:
        ws = make_workspace(tmp_path, server.base_url)
        register_images(ws, [make_images(tmp_path / "pilot", 0, N_PILOT)])
        run_all(ws)
        pilot_keys = {r[0] for r in ws.store.query("SELECT key FROM llm_calls")}
        assert usage(ws)["filter"][0] == N_PILOT

        # Cache-aware: the pilot's own images have nothing left to call.
        again = by_stage(make_plan(ws))
        for st in LLM_STAGES:
            assert again[st].calls.high == 0, (st, again[st].calls)
            assert again[st].done > 0
        assert again["filter"].done == N_PILOT

        plan = make_plan(ws, images=N_ALL)
        st = by_stage(plan)
        # Expansion: the next level (3) is one call per accepted level-2 node, none answered yet.
        assert st["expand"].calls.value == 12 and st["expand"].done == 0 and not st["expand"].skipped
        assert st["filter"].per_call["measured_on"] == "calls with the current prompt"
        assert st["filter"].cost_usd is not None and st["referee:a"].cost_usd.value == 0   # local judges: free
        assert st["referee:b"].calls_saved is not None and st["referee:b"].calls_saved.value > 0

        register_images(ws, [make_images(tmp_path / "rest", N_PILOT, N_ALL)])
        run_all(ws)
        actual = usage(ws, exclude=pilot_keys)

    for name in LLM_STAGES:
        s, (calls, pt, ct) = st[name], actual[name]
        for what, predicted, real in (("calls", s.calls, calls), ("input tokens", s.prompt_tokens, pt),
                                      ("output tokens", s.completion_tokens, ct)):
            assert abs(predicted.value - real) <= 0.10 * real, (name, what, predicted, real)
            assert predicted.low <= real <= predicted.high, (name, what, predicted, real)
    # Costs follow the configured price: filter and Q&A at $2 / $8 per M tokens.
    f = st["filter"]
    assert f.cost_usd.value == pytest.approx((f.prompt_tokens.value * 2 + f.completion_tokens.value * 8) / 1e6)
    assert f.batch_cost_usd is None     # a local server has no batch API
    # Per first-level category: every category is costed, and the costs add up to the stages' costs.
    cats = plan.categories
    assert {c.name for c in cats} == {f"category {a}" for a in range(4)}
    total = sum(s.cost_usd.value for s in plan.stages if s.stage in LLM_STAGES)
    assert sum(c.cost_usd for c in cats) == pytest.approx(total)
    matched = [c for c in cats if c.cost_usd]       # random CLIP weights: not every category gets images
    assert matched and all(c.samples > 0 and c.samples_per_usd > 0 for c in matched)
    assert sum(c.samples for c in cats) == pytest.approx(st["export"].rows.value)
    assert all(c.samples == 0 and c.samples_per_usd == 0 for c in cats if c.cost_usd == 0)
    # The local servers have no batch API (their live price counts); expansion on api.openai.com is at half price.
    assert st["expand"].batch_cost_usd.value == pytest.approx(st["expand"].cost_usd.value * 0.5)
    assert plan.total("batch_cost_usd").value == pytest.approx(total + st["expand"].batch_cost_usd.value)


def test_no_pilot_unknown_price_and_assumptions(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    Taxonomy.of(ws).add_path("ocr~sign reading")
    Taxonomy.of(ws).add_path("counting~people")
    (ws.root / "workbench.toml").write_text((ws.root / "workbench.toml").read_text() + """
[endpoints.default]
base_url = "https://vlm.example.invalid/v1"
model = "mystery-vlm"

[endpoints.paid]
base_url = "https://api.example.invalid/v1"
model = "gpt-4o-2024-08-06"

[[referees]]
name = "j"
endpoint = "paid"

[plan]
tokens_per_image = 5000
""")
    ws = Workspace.open(ws.root)
    plan = make_plan(ws, images=1000)
    st = by_stage(plan)
    assert st["filter"].calls.value == 1000
    assert st["filter"].cost_usd is None and st["qa"].cost_usd is None
    assert plan.total("cost_usd") is None
    assert st["referee:j"].cost_usd.value > 0                    # a known model: priced
    assert st["referee:j"].batch_cost_usd.value == pytest.approx(st["referee:j"].cost_usd.value * 0.5)
    text = plan.table()
    assert re.search(r"^filter .*cost unknown", text, re.M)
    assert "assumptions" in text and "no calls measured" in text
    # Images are counted as the provider counts them: gpt-4o tiles for the referee (a 1024x768 image when none
    # is registered: 765 tokens), [plan] tokens_per_image (5000 here) for the unknown model.
    def per_call_in(stage):
        return float(st[stage].per_call["prompt_tokens"].split()[0].replace(",", ""))
    assert 765 < per_call_in("referee:j") < 5000 < per_call_in("filter")
    # The CLI prints the same, and --json is machine-readable.
    r = run_cli("plan", str(ws.root), "--images", "1000", "--through", "qa")
    assert r.code == 0, r.err
    assert not re.search(r"^referee", r.out, re.M) and re.search(r"^qa .*cost unknown", r.out, re.M)
    r = run_cli("plan", str(ws.root), "--json")
    data = json.loads(r.out)
    assert [s["stage"] for s in data["stages"]][:3] == ["expand", "embed:text", "embed:image"]
    assert data["totals"]["cost_usd"] is None
    r = run_cli("plan", str(ws.root), "--through", "sideways")
    assert r.code == 2 and r.err.startswith("error: --through must be one of")


def test_image_tokens_follow_openai_accounting():
    # OpenAI's documented examples (gpt-4o): 1024x1024 -> 765 tokens; 2048x4096 -> 1105 tokens.
    assert image_tokens("gpt-4o", 1024, 1024) == 765
    assert image_tokens("gpt-4o-2024-08-06", 2048, 4096) == 1105
    assert image_tokens("gpt-4o", 4096, 8192, max_side=1024) == image_tokens("gpt-4o", 512, 1024)
    assert image_tokens("gpt-4o-mini", 1024, 1024) == 2833 + 4 * 5667
    # 32-px patches (gpt-4.1-mini: x1.62): 1024x1024 -> 1024 patches; 1800x2400 -> capped at 1536.
    assert image_tokens("gpt-4.1-mini", 1024, 1024) == 1659
    assert image_tokens("gpt-4.1-nano", 1800, 2400) <= 1536 * 2.46 + 1
    assert image_tokens("Qwen2-VL-7B-Instruct", 1024, 1024, per_image=321) == 321


@pytest.mark.timeout(180)
def test_dashboard_plan_page(tmp_path):
    """The Plan page on the synthetic small workspace: totals, the per-stage table, a cost-per-category bar."""
    import importlib.util
    import os
    import sys
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    repo = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("make_paper_scale_workspace",
                                                  repo / "benchmarks" / "make_paper_scale_workspace.py")
    gen = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, gen)
    spec.loader.exec_module(gen)
    root = tmp_path / "ws"
    gen.build(root, gen.SMALL, log=lambda *a: None)
    expected = make_plan(Workspace.open(root))

    at = AppTest.from_file(str(repo / "app.py"), default_timeout=90)
    at.query_params["page"] = "plan"
    os.environ["WORKBENCH_WORKSPACE"] = str(root)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    cost = expected.total("cost_usd").value
    assert metrics["cost (list)"] == (f"${cost:,.0f}" if cost >= 100 else f"${cost:,.2f}")
    assert metrics["LLM calls"] == f"{expected.total('calls').value:,.0f}"
    stages = at.main.dataframe[0].value
    assert list(stages["stage"])[:4] == ["expand", "embed:text", "embed:image", "match"]
    assert "filter" in set(stages["stage"]) and "qa" in set(stages["stage"])
    import pyarrow as pa

    chart = at.main.get("vega_lite_chart")[0]
    bars = pa.ipc.open_stream(chart.proto.data.data or chart.proto.datasets[0].data.data).read_pandas()
    assert json.loads(chart.proto.spec)["layer"][0]["mark"]["type"] == "bar"
    assert sorted(bars["category"]) == sorted(c.name for c in expected.categories if c.cost_usd)
    assert bars["cost_usd"].sum() == pytest.approx(sum(c.cost_usd for c in expected.categories if c.cost_usd))
    assert json.loads(chart.proto.spec)["encoding"]["y"]["field"] == "category"   # one row per bar: no overlap
    # The category table: whole samples, rounded samples per dollar, no 'None' for an unknown batch cost.
    table = at.main.dataframe[1].value
    assert table["new samples"].dtype.kind == "i"
    assert all(v in ("free", "unknown") or re.fullmatch(r"[\d,]+\.\d", v) for v in table["samples per $"])
    assert "None" not in set(table["batch cost"]) and "None" not in set(table["cost"])
    # The pre-flight section runs the checks on request and shows every finding, failed ones with their fix.
    at.button(key="plan_preflight").click().run()
    assert not at.exception
    shown = [e.value for e in at.success] + [e.value for e in at.error]
    assert any(v.startswith("**budget**") for v in shown) and any(v.startswith("**names**") for v in shown)
    assert any("check(s) failed" in v or "ready for the run" in v for v in shown)
    assert all("fix:" in e.value for e in at.error if e.value.startswith("**"))
    # Planning for more images rescales the figures.
    at.number_input(key="plan_images").set_value(4000).run()
    assert not at.exception
    more = {m.label: m.value for m in at.metric}
    assert more["cost (list)"] != metrics["cost (list)"]
