"""`workbench dashboard DIR`: the Streamlit dashboard on 127.0.0.1 (a thin launcher of Streamlit's own `run`,
through `serve.streamlit_command`: `python -m workbench.apps.dashboard.perf.launch run ...`); and `workbench map`,
which computes and stores the embedding map's projection headless.

Another --host than a loopback address gets a warning saying what that exposes (the pipeline run with this
process's API keys, the workspace read and changed), and an access token by default (`--auth`, auth.py: it gates
the pages, not Streamlit's own endpoints, and there is no TLS); an SSH tunnel stays the recommended way.

The launcher waits for the streamlit process and stops it when it is stopped itself: Ctrl-C, or SIGTERM (which
the console script turns into `main.Terminated`), reaches the child as SIGTERM (SIGKILL after 10 s, `serve.stop`).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
from pathlib import Path

import typer

from workbench.analysis import projection
from workbench.apps.cli.app import WS_ARG, app
from workbench.apps.dashboard.serve import ENV_VAR, TOKEN_ENV, TOKEN_PARAM, new_token, stop, streamlit_command
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace


def is_loopback(host: str) -> bool:
    """True when `host` is a loopback address or a name that resolves only to loopback addresses."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if host.lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def exposure_warning(host: str, port: int, token: bool) -> str:
    where = "every network interface" if host in ("0.0.0.0", "::", "") else f"{host}"
    gate = ("An access token is required (printed once, on standard output); it gates the dashboard's pages, "
            "not Streamlit's static files and websocket, and there is no TLS: anyone who sees the traffic sees "
            "the token and the pages." if token else
            "--no-auth: nothing stops them, the dashboard has no authentication.")
    return (f"warning: --host {host} serves the dashboard on {where}: anyone who can reach port {port} there can "
            "use it as you: run the pipeline's stages with the API keys in this environment and spend on them, "
            "and read and change this workspace (taxonomy, prompts, votes, files); before prompt templates were "
            f"sandboxed they could also run code on this machine. {gate} Safer: keep --host 127.0.0.1 and open an "
            f"SSH tunnel from the other machine (ssh -L {port}:127.0.0.1:{port} THIS-HOST, then browse "
            f"http://127.0.0.1:{port}), or put it behind a reverse proxy that authenticates users and serves TLS.")


def run_until_stopped(cmd: list[str], env: dict[str, str]) -> int:
    """Run the streamlit server and wait for it. However the wait ends (Ctrl-C, SIGTERM raised as
    `main.Terminated`, any error), the server is stopped and reaped before the exception goes on."""
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    try:
        return proc.wait()
    except BaseException:
        stop(proc)
        raise


@app.command()
def dashboard(
    workspace: Path = WS_ARG,
    port: int = typer.Option(8501, "--port", help="Port to serve on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
    print_command: bool = typer.Option(False, "--print-command", help="Print the streamlit command and exit."),
    auth: bool | None = typer.Option(None, "--auth/--no-auth", help="Require a random access token, printed once "
                                     "in the address (default: on when --host is not a loopback address)."),
):
    """Open the dashboard (overview, coverage, images per task, embedding map, referees, prompts)."""
    if not 0 < port < 65536:
        raise WorkbenchError(f"--port must be between 1 and 65535; got {port}")
    Workspace.open(workspace).close()   # a bad folder is an error here, not a red page in the browser
    cmd = streamlit_command(workspace.resolve(), host, port)
    exposed = not is_loopback(host)
    token = new_token() if (exposed if auth is None else auth) else None
    if exposed:
        typer.echo(exposure_warning(host, port, token is not None), err=True)
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}   # an inherited token never gates silently
    env[ENV_VAR] = str(workspace.resolve())
    if token:
        env[TOKEN_ENV] = token
    if print_command:
        typer.echo((f"{TOKEN_ENV}={token} " if token else "") + " ".join(cmd))
        return
    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise WorkbenchError("streamlit is not installed; pip install 'taskgalaxy-workbench[dashboard]'") from None
    shown = f"[{host}]" if ":" in host else host
    query = f"/?{TOKEN_PARAM}={token}" if token else ""
    typer.echo(f"dashboard of {workspace} on http://{shown}:{port}{query} (Ctrl-C stops it)")
    try:
        code = run_until_stopped(cmd, env)
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


@app.command("map")
def map_cmd(
    workspace: Path = WS_ARG,
    method: str = typer.Option("umap", "--method", help="umap (the map to read) or pca (instant, crowded)."),
    sets: list[str] | None = typer.Option(None, "--set", help="Embedding set key to project (repeatable; "
                                             "default: the image and text sets of the newest model)."),
):
    """Compute and store the embedding map's projection headless, so the dashboard only loads it."""
    ws = Workspace.open(workspace)
    available = projection.embedding_sets(ws.store)
    if not available:
        raise WorkbenchError("no embeddings yet; run `workbench embed WORKSPACE` (or `workbench demo`) first")
    sets = sets or projection.default_sets(available)
    known = {s["key"] for s in available}
    unknown = [k for k in sets if k not in known]
    if unknown:
        raise WorkbenchError(f"unknown embedding set(s) {unknown}; available: {sorted(known)}")
    t0 = time.perf_counter()
    found = projection.get_or_compute(ws, sets, method, compute=False)
    proj = found or projection.get_or_compute(ws, sets, method, compute=True)
    what = "already stored" if found else f"computed in {time.perf_counter() - t0:.1f}s"
    typer.echo(f"{method} projection of {len(proj.items):,} points ({', '.join(sets)}): {what}; key {proj.key}")
