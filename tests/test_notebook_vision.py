"""notebooks/03_vision_stages.ipynb runs top to bottom headless against the local test server."""

import nbformat
import pytest
from nbclient import NotebookClient

from openai_server import OpenAIServer
from test_vision_stages import make_workspace, script
from conftest import REPO


@pytest.mark.timeout(240)
def test_vision_notebook_runs_headless(tmp_path):
    with OpenAIServer(script, models=("vlm", "judge-a", "judge-b", "judge-c")) as server:
        ws = make_workspace(tmp_path, server.base_url)
        nb = nbformat.read(REPO / "notebooks" / "03_vision_stages.ipynb", as_version=4)
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        params.source = f"WORKSPACE = {str(ws.root)!r}\nN_IMAGES = 6\nPROGRESS = False"
        NotebookClient(nb, timeout=180, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        assert ws.store.scalar("SELECT count(*) FROM samples WHERE status='ok'") == 3
        assert ws.store.scalar("SELECT count(*) FROM votes") == 9
        assert (ws.exports_dir / "llava.json").is_file()
        outputs = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert "wrote 3 samples" in outputs
        assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
