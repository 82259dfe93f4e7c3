"""01 → 02 → 03 in order on one workspace, headless, to an export: the endpoint named only by the notebooks'
parameters (no hand-written TOML), no CLIP weights (the tiny random-weight model), the scripted server as LLM/VLM."""

from __future__ import annotations

import json
import re

import pytest

from conftest import REPO
from openai_server import OpenAIServer, Reply
from test_notebook_taxonomy import outputs_text, run_notebook
from test_notebook_taxonomy import script as expand_script
from workbench.core.workspace import Workspace


def script(req):
    if "Category: " in req.text:
        return expand_script(req)
    items = re.findall(r"^- (.+)$", req.text, re.M)
    if "candidate task types" in req.text:
        return Reply(json.dumps(items[:1]))                 # the best CLIP candidate fits
    if "write one complex question" in req.text:
        return Reply(json.dumps([{"task_type": k, "question": f"What shows {k}?", "answer": "This."}
                                 for k in items]))
    return Reply("1")                                       # the referee


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_notebooks_01_02_03_on_one_workspace_to_an_export(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ws_dir = tmp_path / "tutorial-workspace"
    with OpenAIServer(script) as server:
        endpoint = f"BASE_URL = {server.base_url!r}\nMODEL = 'vlm'\n"
        run_notebook(REPO / "notebooks" / "01_taxonomy.ipynb", tmp_path,
                     f"WORKSPACE = {str(ws_dir)!r}\n{endpoint}interactive = False\nBUDGET_USD = 1.0")
        nb2 = run_notebook(REPO / "notebooks" / "02_images_and_matching.ipynb", tmp_path,
                           f"WORKSPACE = {str(ws_dir)!r}")
        nb3 = run_notebook(REPO / "notebooks" / "03_vision_stages.ipynb", tmp_path,
                           f"WORKSPACE = {str(ws_dir)!r}\n{endpoint}N_IMAGES = 3\nPROGRESS = False\nBUDGET_USD = 1.0")
    assert "tiny random-weight model" in outputs_text(nb2)
    assert "nothing selected: draw a lasso" in outputs_text(nb2)       # Run All acts on no selection
    text = outputs_text(nb3)
    assert "made by the tiny random-weight CLIP" in text
    ws = Workspace.open(ws_dir)
    assert [r.name for r in ws.config.referees] == ["1-vlm"]           # from the parameters, no TOML by hand
    exported = json.loads((ws.exports_dir / "llava.json").read_text())
    assert len(exported) == 3 and "exported 3 selected sample(s)" in text
    # The samples are about task types of the taxonomy 01 grew (generated nodes are task types too).
    tasks = {r[0] for r in ws.store.query("SELECT DISTINCT n.origin FROM samples s JOIN nodes n ON n.id = s.node_id")}
    assert tasks <= {"seed", "generated"} and tasks
    ws.close()


@pytest.mark.timeout(240)
def test_notebook_01_without_an_endpoint_skips_the_model_cells_and_runs_to_the_end(tmp_path, monkeypatch):
    """No BASE_URL, no [endpoints.*], no OPENAI_* variables: the A/B and expand cells say what to set and skip;
    every other cell runs (nbclient raises on the first failing cell)."""
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    ws_dir = tmp_path / "ws"
    nb = run_notebook(REPO / "notebooks" / "01_taxonomy.ipynb", tmp_path,
                      f"WORKSPACE = {str(ws_dir)!r}\ninteractive = False")
    text = outputs_text(nb)
    assert "trial skipped: no endpoint configured: set BASE_URL" in text
    assert "level 2 not expanded: no endpoint configured" in text
    assert "nodes: 100" in text                  # the last section ran
    ws = Workspace.open(ws_dir)
    assert ws.store.scalar("SELECT count(*) FROM llm_calls") == 0
    ws.close()
