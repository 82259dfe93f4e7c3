"""`workbench demo` offline (what a fresh machine with no key and no GPU gets) and with an endpoint."""

import json
import re

import pytest

from conftest import run_cli, run_cli_subprocess
from openai_server import OpenAIServer
from workbench.core.errors import WorkbenchError
from workbench.taxonomy.model import Taxonomy


@pytest.mark.timeout(300)
def test_demo_offline_runs_what_it_can_and_says_what_it_could_not(tmp_path):
    # The hub does not answer here (a closed port), and no terminal: nothing is pulled and the command is named.
    env = {"WORKBENCH_NO_LOCAL_PROBE": "1", "OPENAI_BASE_URL": "", "OPENAI_API_KEY": "",
           "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    r = run_cli_subprocess("demo", tmp_path / "demo", "--no-browser", timeout=280, env=env)
    assert r.code == 0, r.err
    out = r.out
    assert re.search(r"\[done\s*\] seed taxonomy: 100 nodes, 72 task types", out)
    m = re.search(r"register photographs: (\d+) real photographs", out)
    assert m and int(m.group(1)) >= 10
    assert "[done   ] task map projection: UMAP of 72 task types stored" in out
    assert "[done   ] reference coverage (MMBench abilities)" in out
    # Never pretends: CLIP and the LLM are listed as not run, each with what enables it.
    assert "[skipped] CLIP embed + match" in out and "[clip] pretrained" in out
    assert "[skipped] expand level 2" in out and "--base-url" in out
    assert "[skipped] pull local models (small profile)" in out
    pull = "`workbench models pull --profile small`"
    for step in ("CLIP embed + match", "expand level 2", "filter, Q&A, referees"):   # each names the pull command
        assert re.search(rf"\[skipped\] {re.escape(step)}:", out) and f"  - {step}: {pull}" in out, step
    assert "workbench dashboard" in out

    from workbench.core.workspace import Workspace

    ws = Workspace.open(tmp_path / "demo")
    assert ws.store.scalar("SELECT count(*) FROM images") >= 10
    assert ws.store.scalar("SELECT count(*) FROM projections") == 1
    assert ws.store.scalar("SELECT count(*) FROM matches") == 0
    # Running it again reuses everything.
    r2 = run_cli_subprocess("demo", tmp_path / "demo", "--no-browser", timeout=200, env=env)
    assert r2.code == 0 and "already loaded" in r2.out
    assert ws.store.scalar("SELECT count(*) FROM projections") == 1
    _every_page_in_chromium(tmp_path / "demo")


def _every_page_in_chromium(root):
    """What the README's first command ends with: the dashboard on the demo workspace, no error on any page."""
    from pathlib import Path

    from workbench.apps.dashboard.serve import CHROMIUM, CHROMIUM_ARGS, serve

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: install Debian's chromium (scripts/setup.sh --browser)")
    playwright = pytest.importorskip("playwright.sync_api")
    shots = Path("/tmp/workbench-demo-shots")
    shots.mkdir(exist_ok=True)
    with serve(root) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        chart = "[data-testid=stMain] [data-testid=stVegaLiteChart]"
        for name, selector in [("overview", f"{chart} svg.marks"), ("coverage", f"{chart} svg.marks"),
                               ("images", "[data-testid=stApp]"),
                               ("map", "[data-testid=stMain] [data-testid=stPlotlyChart] .imagelayer image"),
                               ("referees", "[data-testid=stApp]"),
                               ("prompts", "[data-testid=stMain] [data-testid=stDataFrame]")]:
            page.goto(f"{url}/?page={name}")
            page.wait_for_selector(selector, timeout=90_000)
            page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=90_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(shots / f"{name}.png"))
            assert page.locator("[data-testid=stException]").count() == 0, f"{name}: exception shown"
            assert page.locator("[data-testid=stAlertContentError]").count() == 0, f"{name}: error shown"
        browser.close()


def expand_script(req):
    parent = re.search(r"Category: (.+)", req.text)
    name = parent.group(1).split("~")[-1].strip() if parent else "misc"
    return json.dumps([f"{name} for documents", f"{name} in the wild"])


@pytest.mark.timeout(300)
def test_demo_with_an_endpoint_expands_one_level(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_NO_LOCAL_PROBE", "1")
    with OpenAIServer(expand_script) as server:
        r = run_cli("demo", tmp_path / "demo", "--no-browser", "--base-url", server.base_url, "--model",
                    "test-model")
        assert r.code == 0, r.err
        assert "[done   ] expand level 2" in r.out
        assert len(server.requests) == 35        # one call per first-level category
        base_url = server.base_url
    from workbench.core.workspace import Workspace

    ws = Workspace.open(tmp_path / "demo")
    # The demo accepts its expansion's proposals (logged, reviewer `demo`): they are task types for what follows.
    assert "accepted its" in r.out and "as reviewer `demo`" in r.out
    assert Taxonomy.of(ws).count(("proposed",)) == 0
    generated = [n for n in Taxonomy.of(ws).nodes(("accepted",)) if n.origin == "generated"]
    assert len(generated) >= 35 and all(n.level == 2 for n in generated)
    assert set(ws.store.scalar("SELECT group_concat(DISTINCT reviewer) FROM review_log").split(",")) == {"demo"}
    assert any(p.endswith("visual question answering~visual question answering in the wild")
               for _, p in Taxonomy.of(ws).leaves())
    assert 'base_url = "' + base_url in (tmp_path / "demo" / "workbench.toml").read_text()


def test_doctor_reports_keys_by_name_only(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_NO_LOCAL_PROBE", "1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value-123")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    r = run_cli("doctor")
    assert r.code == 0
    assert "sk-secret-value-123" not in r.out
    assert "OPENAI_API_KEY set" in r.out
    assert re.search(r"ok\s+package\s+open_clip_torch", r.out)
    assert re.search(r"--\s+clip\s+ViT-L-14", r.out) and "without it" in r.out


@pytest.mark.timeout(300)
def test_demo_workspace_in_the_dashboard_shows_coverage_task_map_quality_and_new_nodes(tmp_path, monkeypatch):
    """The issue's 'done when': the demo's dashboard shows the seed taxonomy's coverage, the task map and the
    quality figures with no error; after an expansion the new nodes are on the coverage page."""
    from test_dashboard_app import map_points, run

    monkeypatch.setenv("WORKBENCH_NO_LOCAL_PROBE", "1")
    with OpenAIServer(expand_script) as server:
        r = run_cli("demo", tmp_path / "demo", "--no-browser", "--base-url", server.base_url, "--model", "m")
        assert r.code == 0, r.err
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(tmp_path / "demo"))

    def page(name, state=None):   # no exception and no error element, as run() asserts
        return run(tmp_path / "demo", name, state)

    from workbench.core.workspace import Workspace

    ws = Workspace.open(tmp_path / "demo")
    n_nodes = Taxonomy.of(ws).count(("proposed", "accepted"))
    assert n_nodes > 100
    at = page("coverage", {"cov_section": "Node table"})
    table = at.main.dataframe[0].value
    assert len(table) == n_nodes
    assert any("visual question answering in the wild" in str(v) for v in table.to_numpy().ravel())
    at = page("coverage", {"cov_section": "Quality"})
    m = {x.label: x.value for x in at.metric}
    assert m["context length"] == "77" and int(m["max depth"]) == 3
    at = page("map")
    n_points = (map_points(at)["kind"] == "task").sum()   # a small map: every point drawn
    assert n_points == len(Taxonomy.of(ws).leaves()) > 72   # the new task types are on the map too


def test_the_endpoint_flags_are_written_as_toml_strings(ws):
    """--base-url/--model with a quote or a backslash (once written unescaped: the file no longer loaded)."""
    from workbench.apps import demo

    url, model = 'http://127.0.0.1:1/v1?q="x"', 'dir\\model "7b"'
    demo.choose_endpoint(ws, url, model)
    ep = ws.reload_config().endpoints["default"]
    assert (ep.base_url, ep.model) == (url, model)
    demo.choose_endpoint(ws, url, None)                                        # the same endpoint: nothing to do
    with pytest.raises(WorkbenchError, match="edit it there"):
        demo.choose_endpoint(ws, "http://elsewhere/v1", None)


def test_configure_local_models_points_the_workspace_at_the_small_profile(ws, tmp_path, monkeypatch):
    from workbench.apps import demo

    snap = tmp_path / 'hub "cache"'
    monkeypatch.setattr(demo.hub, "is_present", lambda spec: True)
    monkeypatch.setattr(demo.hub, "snapshot_path", lambda spec: snap / spec.repo_id.split("/")[-1])
    monkeypatch.setattr(demo, "clip_settings", lambda ws, snap, spec: {"model": "ViT-B-32",
                                                                        "pretrained": str(snap / "w.safetensors")})
    done = demo.configure_local_models(ws)
    assert len(done) == 4 and done[-1].startswith("two referees")
    cfg = ws.reload_config()
    llm = cfg.endpoints[demo.LOCAL_LLM]
    assert llm.kind == "transformers" and llm.local_path.startswith(str(snap)) and llm.max_concurrency >= 1
    assert (cfg.clip.model, cfg.expand.endpoint, cfg.filter.endpoint, cfg.qa.endpoint) == (
        "ViT-B-32", demo.LOCAL_LLM, demo.LOCAL_VLM, demo.LOCAL_VLM)
    assert (cfg.expand.max_tokens, cfg.filter.max_tokens, cfg.qa.max_tokens) == (256, 96, 320)
    assert [(r.name, r.answer_aware, r.max_tokens) for r in cfg.referees] == [
        ("vlm_paper_prompt", False, 8), ("vlm_answer_aware", True, 8)]
    assert "# TaskGalaxy Workbench configuration" in (ws.root / "workbench.toml").read_text()   # comments kept
    assert demo.configure_local_models(ws) == []                              # set once; the user's edits win
