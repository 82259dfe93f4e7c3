"""notebooks/01_taxonomy.ipynb runs top to bottom headless (nbclient) against the local test server."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO
from openai_server import OpenAIServer, Reply
from workbench.workspace import Workspace

SECRET = "sk-notebook-SECRET-777"


def script(req):
    parent = req.text.split("Category: ", 1)[1].splitlines()[0].split("~")[-1]
    return Reply(f'```json\n["{parent} alpha", "{parent} beta", "{parent} gamma", "{parent}"]\n```')


@pytest.mark.timeout(240)
def test_taxonomy_notebook_headless(tmp_path, monkeypatch):
    nb = nbformat.read(REPO / "notebooks" / "01_taxonomy.ipynb", as_version=4)
    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    ws_dir = tmp_path / "ws"
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with OpenAIServer(script) as server:
        # Injected after the parameters cell, as papermill does.
        nb.cells.insert(idx + 1, nbformat.v4.new_code_cell(
            f"workspace_dir = {str(ws_dir)!r}\nbase_url = {server.base_url!r}\nmodel = 'test-model'\n"
            "interactive = False"))
        NotebookClient(nb, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        assert {r.model for r in server.requests} == {"test-model"}
        assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in server.requests)

    outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert SECRET not in outputs and "Traceback" not in outputs
    ws = Workspace.open(ws_dir)
    branch = ws.taxonomy.index(("accepted",)).roots()[0]
    kids = {c.name: c for c in ws.taxonomy.children(branch.id)}
    name = branch.name
    assert kids[f"{name} alpha"].status == "accepted"
    assert kids[f"{name} beta"].status == "rejected"
    assert kids[f"{name} gamma (reviewed)"].status == "accepted"
    # The edited prompt's hash is the provenance of the proposals it produced.
    assert kids[f"{name} alpha"].prompt_file.endswith("expand_child_mine.j2")
    # The next level was expanded under both accepted proposals, with the default prompts.
    for k in (f"{name} alpha", f"{name} gamma (reviewed)"):
        grand = ws.taxonomy.children(kids[k].id)
        assert [g.name for g in grand] == [f"{k} alpha", f"{k} beta", f"{k} gamma"]
        assert grand[0].prompt_file == "prompts/expand_child_expand.j2"
    assert len(server.requests) == 3, [(r.attempt, r.text[-80:]) for r in server.requests]
    ws.close()
