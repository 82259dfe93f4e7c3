"""notebooks/03_vision_stages.ipynb headless against the local test server: to an export with a configured
workspace, and a last cell that says why nothing was selected when nothing could be."""

import nbformat
import pytest

from conftest import REPO
from openai_server import OpenAIServer
from test_notebook_taxonomy import outputs_text, run_notebook
from test_vision_stages import make_workspace, script

NOTEBOOK = REPO / "notebooks" / "03_vision_stages.ipynb"


def _errors(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]


@pytest.mark.timeout(240)
def test_vision_notebook_runs_headless(tmp_path):
    with OpenAIServer(script, models=("vlm", "judge-a", "judge-b", "judge-c")) as server:
        ws = make_workspace(tmp_path, server.base_url)
        nb = run_notebook(NOTEBOOK, tmp_path, f"WORKSPACE = {str(ws.root)!r}\nN_IMAGES = 6\nPROGRESS = False\n"
                          "BUDGET_USD = 1.0")
        assert ws.store.scalar("SELECT count(*) FROM samples WHERE status='ok'") == 3
        assert ws.store.scalar("SELECT count(*) FROM votes") == 9
        assert (ws.exports_dir / "llava.json").is_file()
        text = outputs_text(nb)
        assert "exported 3 selected sample(s)" in text
        assert "notebook parameters" not in (ws.root / "workbench.toml").read_text()   # its own TOML, untouched
        assert not _errors(nb)
        # Section 4: the Q&A prompt in use, the edited version and a second one, on the four images the filter
        # kept something for, with their thumbnails and figures per version; nothing the stages recorded changed.
        html = _trial_html(nb)
        assert html.count("<img src='data:image/") == 4
        for col in ("current (qa.j2)", "edited", "edited, second"):
            assert f"<th>{col}</th>" in html
        assert "<h4>Per version</h4>" in html and "<th>parse failures</th>" in html and "<th>cost usd</th>" in html
        # Image 4's reply is not a Q&A list: marked in its cells, counted per version, yet every call answered.
        assert "1 reply(ies) could not be read" not in html and "3 reply(ies) could not be read" in html
        assert "parse failed" in html and "every call answered" in html
        assert "nothing promoted (Run All never promotes)" in text
        assert ws.store.scalar("SELECT count(*) FROM samples WHERE status='ok'") == 3
        assert ws.store.scalar("SELECT count(*) FROM trials WHERE stage='qa'") == 1


def _trial_html(nb) -> str:
    cell = next(c for c in nb.cells if c.cell_type == "code" and "trials_nb.trial(" in c.source)
    return "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)


@pytest.mark.timeout(240)
def test_vision_notebook_run_all_calls_nothing_without_a_budget(tmp_path):
    with OpenAIServer(script, models=("vlm", "judge-a", "judge-b", "judge-c")) as server:
        ws = make_workspace(tmp_path, server.base_url)
        nb = run_notebook(NOTEBOOK, tmp_path, f"WORKSPACE = {str(ws.root)!r}\nN_IMAGES = 6\nPROGRESS = False")
        assert server.requests == []
    text = outputs_text(nb)
    assert not _errors(nb)
    assert "the filter not run: dry run only" in text and "prompts in use:" in text
    assert "nothing promoted (Run All never promotes)" in text
    assert ws.store.scalar("SELECT count(*) FROM llm_calls") == 0


@pytest.mark.timeout(120)
def test_vision_notebook_says_why_nothing_was_selected(tmp_path):
    nb = run_notebook(NOTEBOOK, tmp_path, f"WORKSPACE = {str(tmp_path / 'fresh')!r}\nPROGRESS = False")
    text = outputs_text(nb)
    assert not _errors(nb)
    assert "the VLM stages are skipped: no image has CLIP matches: run 02_images_and_matching.ipynb" in text
    last = outputs_text(nbformat.from_dict({"cells": [nb.cells[-1]], "metadata": {}, "nbformat": 4,
                                            "nbformat_minor": 5}))
    assert last.startswith("nothing exported: nothing selected, because no image has CLIP matches")
