"""`workbench dashboard DIR`: the Streamlit dashboard on 127.0.0.1 (a thin launcher of `streamlit run`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import typer

from workbench.cli import WS_ARG, app
from workbench.errors import WorkbenchError


def streamlit_command(workspace: Path, host: str, port: int) -> list[str]:
    script = Path(__file__).resolve().parent.parent / "dashboard" / "streamlit_app.py"
    return [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
            "--server.address", host, "--server.port", str(port), "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal", "--", "--workspace",
            str(workspace)]


@app.command()
def dashboard(
    workspace: Path = WS_ARG,
    port: int = typer.Option(8501, "--port", help="Port to serve on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
    print_command: bool = typer.Option(False, "--print-command", help="Print the streamlit command and exit."),
):
    """Open the dashboard (overview, coverage, images per task, embedding map, referees, prompts)."""
    from workbench.workspace import Workspace

    if not 0 < port < 65536:
        raise WorkbenchError(f"--port must be between 1 and 65535; got {port}")
    Workspace.open(workspace).close()   # a bad folder is an error here, not a red page in the browser
    cmd = streamlit_command(workspace.resolve(), host, port)
    if print_command:
        typer.echo(" ".join(cmd))
        return
    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise WorkbenchError("streamlit is not installed; pip install 'taskgalaxy-workbench[dashboard]'") from None
    typer.echo(f"dashboard of {workspace} on http://{host}:{port} (Ctrl-C stops it)")
    try:
        code = subprocess.call(cmd, env={**os.environ, "WORKBENCH_WORKSPACE": str(workspace.resolve())})
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


@app.command("map")
def map_cmd(
    workspace: Path = WS_ARG,
    method: str = typer.Option("umap", "--method", help="umap (the map to read) or pca (instant, crowded)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Embedding set key to project (repeatable; "
                                             "default: the image and text sets of the newest model)."),
):
    """Compute and store the embedding map's projection headless, so the dashboard only loads it."""
    import time

    from workbench.analysis import projection
    from workbench.workspace import Workspace

    ws = Workspace.open(workspace)
    available = projection.embedding_sets(ws.store)
    if not available:
        raise WorkbenchError("no embeddings yet; run `workbench embed WORKSPACE` (or `workbench demo`) first")
    if not sets:
        newest = available[0]["model"]
        sets = [s["key"] for s in available if s["model"] == newest][:2]
    known = {s["key"] for s in available}
    unknown = [k for k in sets if k not in known]
    if unknown:
        raise WorkbenchError(f"unknown embedding set(s) {unknown}; available: {sorted(known)}")
    t0 = time.perf_counter()
    found = projection.get_or_compute(ws, sets, method, compute=False)
    proj = found or projection.get_or_compute(ws, sets, method, compute=True)
    what = "already stored" if found else f"computed in {time.perf_counter() - t0:.1f}s"
    typer.echo(f"{method} projection of {len(proj.items):,} points ({', '.join(sets)}): {what}; key {proj.key}")
