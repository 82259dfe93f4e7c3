"""notebooks/01_taxonomy.ipynb headless (nbclient) against the local test server, and the prompt loop's library
helpers (workbench.apps.notebooks): versions, preview with the real template, A/B without side effects, promote."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO
from openai_server import OpenAIServer, Reply
from workbench.apps import notebooks as nbs
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.taxonomy.model import Taxonomy

SECRET = "sk-notebook-SECRET-777"
EDIT = "Prefer concrete tasks whose answers can be checked against the image."


def script(req):
    """Three children per parent plus a line that repeats the parent (dropped); a prompt with the notebook's
    example edit also proposes '<parent> checkable'."""
    parent = req.text.split("Category: ", 1)[1].splitlines()[0].split("~")[-1]
    names = [f"{parent} alpha", f"{parent} beta", f"{parent} gamma"]
    if EDIT in req.text:
        names.append(f"{parent} checkable")
    return Reply("```json\n" + json.dumps(names + [parent]) + "\n```")


def run_notebook(path, tmp_path, params: str, timeout=180):
    nb = nbformat.read(path, as_version=4)
    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(idx + 1, nbformat.v4.new_code_cell(params))     # injected after the parameters, as papermill does
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def outputs_text(nb) -> str:
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            data = o.get("data", {})
            out.append(o.get("text", "") or str(data.get("text/html", "")) + str(data.get("text/plain", "")))
    return "\n".join(out)


@pytest.mark.timeout(240)
def test_taxonomy_notebook_headless(tmp_path, monkeypatch):
    ws_dir = tmp_path / "ws"
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with OpenAIServer(script) as server:
        nb = run_notebook(REPO / "notebooks" / "01_taxonomy.ipynb", tmp_path,
                          f"WORKSPACE = {str(ws_dir)!r}\nBASE_URL = {server.base_url!r}\nMODEL = 'test-model'\n"
                          "interactive = False\nBUDGET_USD = 1.0\nWINNER = 'edited'")
        assert {r.model for r in server.requests} == {"test-model"}
        assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in server.requests)
        texts = [r.text for r in server.requests]

    outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert SECRET not in outputs and "Traceback" not in outputs
    text = outputs_text(nb)
    (tmp_path / "outputs.txt").write_text(text)
    ws = Workspace.open(ws_dir)
    # The endpoint came from the parameters: written to the workspace, so 02/03 and the CLI see it.
    assert ws.config.endpoints["default"].model == "test-model"
    # The edited version was promoted to the workspace's copy, and level 2 used it for parents with children.
    copy = ws.prompts_dir / "expand_child_supplement.j2"
    assert EDIT in copy.read_text()
    assert "every call answered" in text and "promoted edited" in text
    # The preview rendered the real template for a parent with children (no "no subcategories yet").
    assert "It already has these subcategories" in text
    ocr = Taxonomy.of(ws).find("optical character recognition")
    kids = {c.name: c for c in Taxonomy.of(ws).children(ocr.id)}
    assert "optical character recognition checkable" in kids                    # the promoted version's proposal
    assert kids["optical character recognition alpha"].prompt_file == str(copy.resolve())
    # Review: the scripted clicks on this run's first three proposals.
    statuses = [kids[f"optical character recognition {s}"].status for s in ("alpha", "beta")]
    assert statuses == ["accepted", "rejected"]
    reviewed = kids["optical character recognition gamma (reviewed)"]
    assert reviewed.status == "accepted"
    # Level 3 under the two accepted generated nodes, with the default child_expand prompt (no children yet).
    for name in ("optical character recognition alpha", "optical character recognition gamma (reviewed)"):
        grand = Taxonomy.of(ws).children(kids[name].id)
        assert [g.name for g in grand][:3] == [f"{name} alpha", f"{name} beta", f"{name} gamma"]
        assert grand[0].prompt_file == "prompts/expand_child_expand.j2"
    # Every call paid once: the A/B's version and level 2 share the cache for the same parents.
    assert len(texts) == len(set(texts))
    assert "live node(s)" in text and "Next: 02_images_and_matching.ipynb" in text
    ws.close()


@pytest.fixture
def seeded(seeded_ws):
    return seeded_ws


def test_trial_helpers_budget_identical_versions_failures_and_winner(seeded):
    """The notebooks' trial loop: no budget = a dry run (nothing called); the prompt in use is not run again; a
    trial with a failed call declares no winner and WINNER is refused; a clean one promotes only when named."""
    from workbench.apps import notebook_trials as tn

    ws = seeded
    stage, name = "expand:child_supplement", "expand_child_supplement.j2"
    parents = nbs.parents_using(ws, name, n=2)
    current = nbs.current_prompt(ws, name)
    edited = current.source.replace("Name each one", EDIT + " Name each one")
    with OpenAIServer(script) as server:
        nbs.configure_endpoints(ws, base_url=server.base_url, model="m")
        dry = tn.trial(ws, stage, {"edited": edited}, parents, budget_usd=0)
        assert server.requests == [] and not dry.ok and "dry run only: 4 call(s)" in dry.verdict
        assert dry.trial.status == "dry run" and "no winner" in dry.verdict
        same = tn.trial(ws, stage, {"edited": current.source}, parents, budget_usd=1.0)
        assert same.trial is None and "nothing to compare" in same.verdict and server.requests == []
        assert "the same text as current" in same.skipped[0]
        res = tn.trial(ws, stage, {"edited": edited, "again": edited}, parents, budget_usd=1.0)
        assert len(server.requests) == 4 and res.ok and "every call answered" in res.verdict
        assert "the same text as edited" in res.skipped[0]
        html = res._repr_html_()
        assert "<h4>Per version</h4>" in html and "checkable" in html
    assert "nothing promoted" in tn.promote_winner(ws, res, None)
    assert "no version 'nope'" in tn.promote_winner(ws, res, "nope")
    assert nbs.current_prompt(ws, name).hash == current.hash                    # nothing promoted so far
    assert "promoted edited" in tn.promote_winner(ws, res, "edited")
    assert EDIT in nbs.current_prompt(ws, name).source
    # A dead endpoint: its calls fail; the trial says so and declares no winner; promoting it is refused.
    down = Reply(status=404, raw='{"error": {"message": "model m is not loaded"}}', content_type="application/json")
    with OpenAIServer(lambda req: down) as server:
        nbs.configure_endpoints(ws, base_url=server.base_url)
        bad = tn.trial(ws, stage, {"other": edited + "\nAnother line."}, parents, budget_usd=1.0)
    # (The current version's replies are cached from the trial above: only the new version's calls fail.)
    assert not bad.ok and "no winner: 2 of 4 call(s) failed" in bad.verdict and "model m is not loaded" in bad.verdict
    assert "not promoted: the trial declared no winner" in tn.promote_winner(ws, bad, "other")
    assert "Another line." not in nbs.current_prompt(ws, name).source


def test_spend_gate():
    from workbench.apps.notebook_trials import spend_gate
    from workbench.stages.base import RunReport

    rep = RunReport(stage="qa", endpoint="default", model="m", to_call=3, est_cost_usd=0.02)
    assert "dry run only" in spend_gate(rep, 0) and "dry run only" in spend_gate(rep, None)
    assert spend_gate(rep, 0.05) is None
    assert "over BUDGET_USD = 0.01" in spend_gate(rep, 0.01)
    rep.est_cost_usd = None
    assert "unknown" in spend_gate(rep, 5)
    rep.to_call = 0
    assert spend_gate(rep, 0) is None                                   # all cached: nothing to spend


def test_versions_preview_and_promote(seeded):
    ws = seeded
    name = "expand_child_supplement.j2"
    parents = nbs.parents_using(ws, name, n=2)
    leaf1 = next(n for n, _ in Taxonomy.of(ws).leaves() if n.level == 1)          # a level-1 node without children
    v1 = nbs.save_draft(ws, name, nbs.current_prompt(ws, name).source + "\nVersion one.")
    assert nbs.save_draft(ws, name, v1.source).path == v1.path                 # same text, same version
    text = nbs.preview_version(ws, name, v1, [parents[0], leaf1.id])
    first, second = text.split("=== ")[1:]
    assert "Version one." in first and "It already has these subcategories" in first
    assert "expand_child_expand.j2 (not expand_child_supplement.j2" in second and "no subcategories yet" in second
    assert "Version one." not in second
    with pytest.raises(WorkbenchError, match="line 1"):
        nbs.save_draft(ws, name, "{% if %}")
    with pytest.raises(WorkbenchError, match="not an expansion prompt"):
        nbs.save_draft(ws, "qa.j2", "x")

    bundled = nbs.current_prompt(ws, name)
    assert "bundled prompt" in nbs.describe_prompt(ws, name)
    said = nbs.promote(ws, name, v1)
    assert "promoted version" in said
    assert nbs.current_prompt(ws, name).hash == v1.hash                        # the stage now uses it
    assert "workspace's copy" in nbs.describe_prompt(ws, name)
    assert any(p.read_text() == bundled.source for p in nbs.drafts_dir(ws).iterdir())   # the old text is kept
    assert "already what the stage uses" in nbs.promote(ws, name, v1)
    # The editor reopens on the promoted copy (newer than the backup version promote saved).
    ed = nbs.PromptEditor(ws, name)
    assert ed.value == v1.source
    ed.text.value = v1.source + "\nVersion two."                              # an edit in the box saves a version
    assert nbs.PromptEditor(ws, name).value.endswith("Version two.")           # a re-run cell finds it again


def test_configure_endpoints_block(ws):
    said = nbs.configure_endpoints(ws, base_url="http://127.0.0.1:1/v1", model="m1")
    assert "m1" in said and ws.config.endpoints["default"].base_url == "http://127.0.0.1:1/v1"
    assert nbs.configure_endpoints(ws, base_url="http://127.0.0.1:1/v1", model="m1") == ""     # nothing changed
    nbs.configure_endpoints(ws, referee_models=["j1", "j2"])
    assert [r.endpoint for r in ws.config.referees] == ["referee_1", "referee_2"]
    assert ws.config.endpoints["referee_2"].model == "j2" and ws.config.endpoints["default"].model == "m1"
    nbs.configure_endpoints(ws, model="m2")                                   # the referees stay
    assert len(ws.config.referees) == 2 and ws.config.endpoints["default"].model == "m2"
    cfg = ws.root / "workbench.toml"
    cfg.write_text(cfg.read_text() + '\n[endpoints.default]\nmodel = "mine"\n')
    with pytest.raises(WorkbenchError, match=r"line \d+ already configures endpoints.default"):
        nbs.configure_endpoints(ws, model="m3")


def test_review_gate_stops_until_apply(seeded):
    from workbench.review import ReviewTable
    from workbench.review.widgets import ReviewPending

    ws = seeded
    Taxonomy.of(ws).add("Proposed one", Taxonomy.of(ws).find("object recognition"), status="proposed")
    table = ReviewTable(ws)
    with pytest.raises(ReviewPending, match="press Apply") as info:
        table.require_apply()
    assert len(info.value._render_traceback_()) == 1                  # IPython shows one line, no traceback
    assert "re-run this cell" in table._repr_mimebundle_()["text/plain"]
    table.apply_button.click()                                         # every row on keep is a choice too
    table.require_apply()
    assert Taxonomy.of(ws).find("object recognition~Proposed one").status == "proposed"


def run_until_error(path, tmp_path, params: str):
    """Run All as nbclient does; returns the notebook and the error that stopped it (None: it ran to the end)."""
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(idx + 1, nbformat.v4.new_code_cell(params))
    try:
        NotebookClient(nb, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    except CellExecutionError as exc:
        return nb, str(exc)
    return nb, None


@pytest.mark.timeout(300)
def test_taxonomy_notebook_run_all_is_safe(tmp_path, monkeypatch):
    """Default parameters with a live endpoint: dry runs only, nothing called, nothing promoted. Next day (the same
    workspace after a budgeted session): nothing re-run for the promoted version, and the review gate counts the
    proposals earlier runs left pending, although the table's run filter shows none."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    ws_dir = tmp_path / "ws"
    nb01 = REPO / "notebooks" / "01_taxonomy.ipynb"
    with OpenAIServer(script) as server:
        endpoint = f"WORKSPACE = {str(ws_dir)!r}\nBASE_URL = {server.base_url!r}\nMODEL = 'm'\n"
        nb, err = run_until_error(nb01, tmp_path, endpoint)
        assert err is None and server.requests == []                       # Run All: no call at all
        text = outputs_text(nb)
        assert "dry run only" in text and "level 2 not expanded: dry run only" in text
        assert "nothing promoted (Run All never promotes)" in text and "pending proposals: 0" in text
        assert not (ws_dir / "prompts" / "expand_child_supplement.j2").exists()
        # A session that spends and promotes, deciding 3 proposals (the rest stay pending) ...
        run_notebook(nb01, tmp_path, endpoint + "BUDGET_USD = 1.0\nWINNER = 'edited'\ninteractive = False")
        calls = len(server.requests)
        ws = Workspace.open(ws_dir)
        pending = ws.store.scalar("SELECT count(*) FROM nodes WHERE status='proposed'")
        ws.close()
        assert calls and pending > 3
        # ... then Run All the next day, with a budget: the promoted version is not tried against itself.
        nb, err = run_until_error(nb01, tmp_path, endpoint + "BUDGET_USD = 1.0\nWINNER = 'edited'")
        assert len(server.requests) == calls                               # nothing asked again
    text = outputs_text(nb)
    assert f"pending proposals: {pending}" in text                         # the first cell's state
    assert "nothing to compare: every edited version is the prompt in use" in text
    assert "not promoted" in text
    assert err is not None and f"{pending} proposal(s) wait in the review table above" in err


@pytest.mark.timeout(300)
def test_taxonomy_notebook_dead_endpoint_shows_the_error_and_promotes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    """Every call fails (an endpoint answering 404 fails at once; a refused connection is retried first, the
    same outcome after minutes): the trial shows the error and no winner, WINNER is refused."""
    ws_dir = tmp_path / "ws"
    down = Reply(status=404, raw='{"error": {"message": "model m is not loaded"}}', content_type="application/json")
    with OpenAIServer(lambda req: down) as server:
        nb, err = run_until_error(REPO / "notebooks" / "01_taxonomy.ipynb", tmp_path,
                                  f"WORKSPACE = {str(ws_dir)!r}\nBASE_URL = {server.base_url!r}\nMODEL = 'm'\n"
                                  "BUDGET_USD = 1.0\nWINNER = 'edited'")
    assert err is None, err
    text = outputs_text(nb)
    assert "no winner:" in text and "call failed" in text and "model m is not loaded" in text
    assert "not promoted: the trial declared no winner" in text
    ws = Workspace.open(ws_dir)
    assert not (ws.prompts_dir / "expand_child_supplement.j2").exists()
    assert ws.store.scalar("SELECT status FROM trials ORDER BY id DESC LIMIT 1") == "failed"
    assert ws.store.scalar("SELECT count(*) FROM trial_promotions") == 0
    ws.close()
