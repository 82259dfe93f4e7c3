"""`workbench dashboard DIR`: the launcher's command line, its errors, and a real server on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run_cli
from workbench.apps.dashboard.serve import free_port, workspace_from_args


def test_print_command_binds_loopback(ws):
    res = run_cli("dashboard", ws.root, "--print-command", "--port", "8765")
    assert res.code == 0, res.err
    out = res.out
    assert "--server.address 127.0.0.1" in out and "--server.port 8765" in out
    assert f"--workspace {ws.root.resolve()}" in out and "-m workbench.apps.dashboard.perf.launch run" in out


@pytest.mark.timeout(120)
def test_server_reads_the_first_page_figures_before_any_browser_asks(ws, monkeypatch):
    """perf/launch.py: while no browser has connected yet, the server has imported the dashboard and filled the
    overview's caches (the first script run then finds them); with the prewarm off it reads nothing early."""
    from workbench.apps.dashboard.serve import serve

    for prewarm, expected in (("1", True), ("0", False)):
        monkeypatch.setenv("WORKBENCH_DASHBOARD_PREWARM", prewarm)
        with serve(ws.root) as url:
            log = Path(os.environ.get("TMPDIR", "/tmp")) / f"workbench-dashboard-{url.rsplit(':', 1)[1]}.log"
            deadline = time.monotonic() + 60
            while "overview's figures read" not in log.read_text() and time.monotonic() < deadline and expected:
                time.sleep(0.2)
            if not expected:
                time.sleep(3)
            assert ("overview's figures read" in log.read_text()) is expected, log.read_text()
            assert "head start failed" not in log.read_text()


def test_bad_workspace_and_port_are_clear_errors(tmp_path, ws):
    res = run_cli("dashboard", tmp_path / "nope")
    assert res.code == 2 and res.err.startswith("error:") and "workbench init" in res.err
    res = run_cli("dashboard", ws.root, "--port", "70000")
    assert res.code == 2 and "--port" in res.err


def test_workspace_from_argv_or_environment(monkeypatch):
    monkeypatch.delenv("WORKBENCH_WORKSPACE", raising=False)
    assert workspace_from_args(["--workspace", "/a/b"]) == "/a/b"
    assert workspace_from_args([]) is None
    monkeypatch.setenv("WORKBENCH_WORKSPACE", "/c")
    assert workspace_from_args([]) == "/c"
    assert workspace_from_args(["--workspace", "/a"]) == "/a"


@pytest.mark.timeout(120)
def test_dashboard_command_serves_on_loopback(ws):
    port = free_port()
    exe = Path(sys.executable).with_name("workbench")
    proc = subprocess.Popen([str(exe), "dashboard", str(ws.root), "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "dashboard never became healthy"
                time.sleep(0.3)
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
        if listening.returncode == 0 and listening.stdout.strip():
            assert all("127.0.0.1:" in line for line in listening.stdout.strip().splitlines()), listening.stdout
    finally:
        os.killpg(proc.pid, 15)   # the launcher and the streamlit it started (its own session)
        proc.wait(timeout=20)
