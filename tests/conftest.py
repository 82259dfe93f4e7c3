"""Shared fixtures: fresh workspaces and a CLI runner that goes through `workbench.apps.cli.main.main`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from workbench.taxonomy.model import Taxonomy

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The dashboard's background prewarm would run in every AppTest/served workspace, competing with the tests for
# the CPU; tests/test_dashboard_prewarm.py runs the prewarm steps themselves.
os.environ.setdefault("WORKBENCH_DASHBOARD_PREWARM", "0")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def ws(tmp_path):
    """An empty workspace."""
    from workbench.core.workspace import Workspace

    w = Workspace.init(tmp_path / "ws")
    yield w
    w.close()


@pytest.fixture
def seeded_ws(tmp_path):
    """A workspace with the bundled seed task types."""
    from workbench.core.workspace import Workspace
    from workbench.taxonomy.io import load_seed

    w = Workspace.init(tmp_path / "ws")
    load_seed(Taxonomy.of(w))
    yield w
    w.close()


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str) -> CliResult:
    """Run the CLI in-process (fast) and capture its output and exit code."""
    from workbench.apps.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return CliResult(code, out.getvalue(), err.getvalue())


def run_cli_subprocess(*args: str, timeout: float = 120, env: dict | None = None) -> CliResult:
    """Run the installed console script in a separate process (what a user types)."""
    exe = Path(sys.executable).with_name("workbench")
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return run_cli
