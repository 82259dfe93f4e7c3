"""How the dashboard is started: the command (`streamlit_command`, what `workbench dashboard` runs), how the entry
script finds its workspace in it (`workspace_from_args`), and `serve`, which starts it as a subprocess on 127.0.0.1
and waits until it is healthy (used by the browser tests and the benchmarks)."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ENV_VAR = "WORKBENCH_WORKSPACE"
TOKEN_ENV = "WORKBENCH_DASHBOARD_TOKEN"   # the access token auth.py requires, when set (`workbench dashboard --auth`)
TOKEN_PARAM = "token"                     # ...shown as ?token=
SCRIPT = Path(__file__).resolve().parent / "streamlit_app.py"   # the one entry script, inside the package


def workspace_from_args(argv: list[str] | None = None) -> str | None:
    """The workspace the dashboard shows: `--workspace DIR` among the script's arguments, else $WORKBENCH_WORKSPACE."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workspace", default=None)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args.workspace or os.environ.get(ENV_VAR)


def stop(proc: subprocess.Popen, timeout: float = 10) -> int:
    """Stop a server process: SIGTERM (streamlit shuts down cleanly), then SIGKILL after `timeout` seconds.
    Returns its exit status; waits for it, so no zombie is left."""
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
        except BaseException:   # a second Ctrl-C while waiting: no more patience, but no orphan either
            proc.kill()
            proc.wait()
            raise
    return proc.wait()


def streamlit_command(workspace: Path, host: str, port: int) -> list[str]:
    # Streamlit's own command line, through perf/launch.py: it imports the first page's modules and reads its figures
    # while the browser loads Streamlit's JavaScript.
    return [sys.executable, "-m", "workbench.apps.dashboard.perf.launch", "run", str(SCRIPT),
            "--server.headless", "true", "--server.address", host, "--server.port", str(port),
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--client.toolbarMode", "minimal", "--", "--workspace", str(workspace)]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(workspace: Path | str, port: int | None = None, timeout: float = 90,
          script: Path | str | None = None) -> Iterator[str]:
    """Yield the base URL of a running dashboard; stop the server (only it) afterwards. `script`: serve that
    Streamlit file instead, with the dashboard's server options (the benchmark's framework floor)."""
    port = port or free_port()
    cmd = streamlit_command(Path(workspace).resolve(), "127.0.0.1", port)
    if script is not None:
        cmd[cmd.index("run") + 1] = str(Path(script).resolve())
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"workbench-dashboard-{port}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, ENV_VAR: str(Path(workspace).resolve())})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"dashboard not healthy after {timeout}s; see {log.name}")
            time.sleep(0.25)
        yield url
    finally:
        stop(proc)
        log.close()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
