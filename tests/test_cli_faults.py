"""The CLI under faults: signals (SIGTERM/SIGINT unwind and stop child processes), impossible paths,
and a dashboard bound beyond this machine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run_cli
from workbench.apps.dashboard.serve import free_port

EXE = Path(sys.executable).with_name("workbench")


# -- fault 4: a dashboard on a non-loopback address says what that exposes --------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_dashboard_on_a_non_loopback_host_warns(ws, host):
    r = run_cli("dashboard", ws.root, "--host", host, "--port", "8599", "--print-command")
    assert r.code == 0, r.err
    assert f"--server.address {host}" in r.out        # it still does what was asked
    warning = r.err.lower()
    assert warning.startswith("warning:") and "api keys" in warning and "spend" in warning
    assert "read and change this workspace" in warning and "run code" in warning
    assert "ssh -l 8599:127.0.0.1:8599" in warning and "reverse proxy" in warning
    # A token by default beyond loopback: in the server's environment, said to gate the pages only, without TLS.
    assert "access token is required" in warning and "no tls" in warning and "websocket" in warning
    assert r.out.startswith("WORKBENCH_DASHBOARD_TOKEN=") and len(r.out.split()[0].split("=", 1)[1]) >= 24
    r2 = run_cli("dashboard", ws.root, "--host", host, "--port", "8599", "--print-command")
    assert r2.out.split()[0] != r.out.split()[0]         # a new random token per start


def test_dashboard_beyond_loopback_without_auth_says_nothing_stops_them(ws):
    r = run_cli("dashboard", ws.root, "--host", "0.0.0.0", "--no-auth", "--print-command")
    assert r.code == 0 and "WORKBENCH_DASHBOARD_TOKEN" not in r.out
    assert "--no-auth: nothing stops them" in r.err and "api keys" in r.err.lower()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_dashboard_on_loopback_does_not_warn(ws, host):
    r = run_cli("dashboard", ws.root, "--host", host, "--print-command")
    assert r.code == 0 and r.err == "", r.err
    assert "WORKBENCH_DASHBOARD_TOKEN" not in r.out
    r = run_cli("dashboard", ws.root, "--host", host, "--auth", "--print-command")
    assert r.out.startswith("WORKBENCH_DASHBOARD_TOKEN=") and r.err == ""


# -- fault 5: SIGTERM to `workbench dashboard` stops the streamlit server it started -------------------------------
def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie (exited, not yet reaped by its parent) is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(150)
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the child process")
def test_sigterm_to_dashboard_stops_the_streamlit_child(ws, tmp_path):
    pytest.importorskip("streamlit")
    port = free_port()
    # Output to files, not pipes: an orphaned server would hold a pipe open and hang the read.
    out_file, err_file = open(tmp_path / "out.txt", "w+"), open(tmp_path / "err.txt", "w+")
    # Loopback only; `--server.headless true` in the streamlit command means no browser is ever opened.
    proc = subprocess.Popen([str(EXE), "dashboard", str(ws.root), "--port", str(port), "--host", "127.0.0.1"],
                            stdout=out_file, stderr=err_file, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)   # its own group, so the cleanup below can reach any orphan
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "err.txt").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "dashboard never became healthy"
            time.sleep(0.3)
        children = _children(proc.pid)
        assert children, "the launcher started no child process"
        os.kill(proc.pid, signal.SIGTERM)        # the launcher only, as `kill PID` or a process manager does
        proc.wait(timeout=30)
        err = (tmp_path / "err.txt").read_text()
        assert proc.returncode == 143, (proc.returncode, err)
        assert "Traceback" not in err and "terminated" in err, err
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(c) for c in children), "streamlit outlived the launcher"
        assert not _port_open(port), "the dashboard port is still served"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # whatever is left of the launcher's session
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.wait(timeout=10)
        out_file.close()
        err_file.close()


# -- fault 6: impossible paths are one `error:` line, not a traceback ----------------------------------------------
LONG = "n" * 300   # one path component over NAME_MAX (255)


@pytest.mark.parametrize("args", [
    ["init", "{tmp}/" + LONG],
    ["taxonomy", "stats", "{tmp}/" + LONG],
    ["taxonomy", "import", "{ws}", "{tmp}/" + LONG + ".txt"],
    ["taxonomy", "export", "{ws}", "{tmp}/" + LONG + ".txt"],
    ["taxonomy", "coverage", "{ws}", "{tmp}/" + LONG + ".txt"],
    ["images", "add", "{ws}", "{tmp}/" + LONG],
    ["rejections", "{ws}", "--out", "{tmp}/" + LONG + ".csv"],
])
def test_a_too_long_file_name_is_one_error_line(tmp_path, ws, args):
    r = run_cli(*[a.format(tmp=tmp_path, ws=ws.root) for a in args])
    assert r.code == 2, r.err
    assert r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1, r.err
    assert "File name too long" in r.err and "nnnnnnnn" in r.err


@pytest.fixture
def path_probe():
    """A throwaway command whose path handling hits the OS with its argument unchecked (a `str`, not a typer Path)."""
    from workbench.apps.cli import main as cli

    def probe(where: str = cli.typer.Argument(..., help="A path.")):
        os.stat(where)

    cli.app.command("path-probe")(probe)
    yield
    cli.app.registered_commands[:] = [c for c in cli.app.registered_commands if c.name != "path-probe"]


def test_a_nul_byte_in_a_path_is_one_error_line_naming_the_argument(path_probe, monkeypatch):
    monkeypatch.delenv("WORKBENCH_DEBUG", raising=False)
    r = run_cli("path-probe", "some\x00where")
    assert r.code == 2, r.err
    assert r.err.startswith("error: ") and len(r.err.strip().splitlines()) == 1, r.err
    assert "NUL" in r.err and "'some\\x00where'" in r.err


def test_workbench_debug_keeps_the_traceback(path_probe, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DEBUG", "1")
    r = run_cli("path-probe", "some\x00where")
    assert r.code == 2 and "Traceback" in r.err and "ValueError: embedded null byte" in r.err
    assert r.err.strip().splitlines()[-1].startswith("error: ")


def test_a_real_bug_is_still_a_traceback(monkeypatch):
    """Only path errors are turned into `error:` lines; a ValueError from the code itself propagates."""
    from workbench.apps.cli import main as cli

    def broken():
        raise ValueError("a bug")

    cli.app.command("broken-probe")(broken)
    try:
        with pytest.raises(ValueError, match="a bug"):
            run_cli("broken-probe")
    finally:
        cli.app.registered_commands[:] = [c for c in cli.app.registered_commands if c.name != "broken-probe"]


# -- fault 7: SIGTERM / Ctrl-C unwind a running command so its cleanup runs --------------------------------------
LONG_COMMAND = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from workbench.apps.cli import main as cli

    marks = Path(sys.argv[1])

    @cli.app.command("long-probe")
    def long_probe():
        try:
            with open(marks / "ready", "w"):
                pass
            time.sleep(60)
        finally:   # what a stage run's context manager does: record that it was cut short
            (marks / "cleaned-up").write_text(repr(sys.exc_info()[0]))

    sys.argv = ["workbench", "long-probe"]
    cli.entrypoint()
""")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_unwinds_a_running_command(tmp_path, sig, code, word):
    proc = subprocess.Popen([sys.executable, "-c", LONG_COMMAND, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, (proc.returncode, err)
    assert (tmp_path / "cleaned-up").exists(), "the command's cleanup did not run"
    cause = (tmp_path / "cleaned-up").read_text()
    assert "SystemExit" in cause or "KeyboardInterrupt" in cause or "Terminated" in cause, cause
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and word in err, err
