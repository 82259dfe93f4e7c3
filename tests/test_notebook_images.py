"""The images-and-matching notebook runs headless, offline, end to end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "02_images_and_matching.ipynb"


@pytest.mark.timeout(240)
def test_images_notebook_runs_headless(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["HF_HUB_OFFLINE"] = "1"
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "6 image(s) added" in text and "1 problem(s)" in text
    assert "not an image" in text
    assert "matched 6 image(s)" in text
    assert "'matched': 6" in text and "'k': 5" in text
    # the image cell displayed a picture and a top-k table with 5 rows
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outs)
    assert any("rank" in str(o.get("data", {}).get("text/plain", "")) and "score" in str(o.get("data", {}).get("text/plain", "")) for o in outs)
