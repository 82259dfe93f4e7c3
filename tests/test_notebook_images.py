"""The images-and-matching notebook runs headless, offline, end to end on a workspace it creates (no CLIP
weights here: the tiny random-weight model, said in one line)."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import REPO
from test_notebook_taxonomy import outputs_text, run_notebook
from workbench.core.workspace import Workspace
from workbench.taxonomy.model import Taxonomy


@pytest.mark.timeout(240)
def test_images_notebook_runs_headless(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ws_dir = tmp_path / "tutorial-workspace"
    # The map's selection given as ids (an export of two demo photographs: an image's id is its bytes' sha256).
    from workbench.apps.demo import write_demo_images

    photos = sorted(write_demo_images(tmp_path / "photos"))[:2]
    chosen = [hashlib.sha256(p.read_bytes()).hexdigest() for p in photos]
    (tmp_path / "sel.tsv").write_text("kind\tid\n" + "".join(f"image\t{i}\n" for i in chosen))
    nb = run_notebook(REPO / "notebooks" / "02_images_and_matching.ipynb", tmp_path,
                      f"WORKSPACE = {str(ws_dir)!r}\nSELECTION_FILE = {str(tmp_path / 'sel.tsv')!r}\n"
                      "PROPOSE_NAME = 'photos from the map'\nFLAG_REASON = 'too dark'")
    text = outputs_text(nb)
    ws = Workspace.open(ws_dir)
    n = ws.store.scalar("SELECT count(*) FROM images")
    assert n >= 5 and f"{n} image(s) added" in text
    assert Taxonomy.of(ws).count() > 0                                    # created with the seed task types
    assert f"{n} image(s) matched to their top-5 task types" in text
    assert "Next: 03_vision_stages.ipynb" in text
    # The map: a stored projection drawn as the widget, the selection acted on as the dashboard's map does.
    assert ws.store.scalar("SELECT count(*) FROM projections WHERE method='umap'") == 1
    assert f"umap map of {n} image(s)" in text and "lasso" in text
    assert "application/vnd.jupyter.widget-view+json" in json.dumps([c.get("outputs") for c in nb.cells])
    assert "The map: a live widget" in text                             # what a reopened notebook says to do
    assert "2 image(s), 0 task type(s) selected" in text
    node = ws.store.one("SELECT status, note FROM nodes WHERE name='photos from the map'")
    assert node["status"] == "proposed" and "map selection" in node["note"]
    assert "no Q&A samples for these images yet" in text                # 02 has no samples to flag
    exported = (ws_dir / "map-selection.tsv").read_text().splitlines()
    assert exported[0] == "kind\tid" and sorted(exported[1:]) == sorted(f"image\t{i}" for i in chosen)
    # No real CLIP weights: one line says so and what to set; no red warning from the library as well.
    assert text.count("tiny random-weight model") == 1 and "CLIP_PRETRAINED" in text
    streams = [o for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not any("CLIP weights: random" in o["text"] for o in streams)
    assert "[clip]" in (ws.root / "workbench.toml").read_text() and "wb-tiny-clip" not in \
        (ws.root / "workbench.toml").read_text()                        # the user's config is not changed
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outs)
    assert not any(o.get("output_type") == "error" for o in outs), json.dumps(outs)[:2000]
    ws.close()
