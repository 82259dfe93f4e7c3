"""Shared fixtures: fresh workspaces and a CLI runner that goes through `workbench.apps.cli.main.main`."""

from __future__ import annotations

import io
import os
import re
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

# The quick lane (`bash scripts/test.sh --quick`) runs every test not marked `integration`. These files are
# integration tests: they start browsers, notebooks, dashboard servers or CLI subprocesses, load real models
# (MiniLM, UMAP), build wheels, or time real work; together they are ~95 % of the suite's time. A new test file is a
# unit test (in the quick lane) unless it is added here.
INTEGRATION_FILES = {
    "test_accepted_only.py", "test_adaptive_referees.py", "test_analysis_projection.py", "test_audit.py",
    "test_audit_backends.py", "test_audit_image.py", "test_audit_items.py", "test_audit_label.py", "test_batch.py",
    "test_audit_cues.py", "test_cli_faults.py", "test_consensus.py",
    "test_coverage_matcher.py", "test_dashboard_app.py", "test_dashboard_browser.py", "test_dashboard_cli.py",
    "test_dashboard_prewarm.py", "test_dashboard_security.py", "test_demo.py", "test_discovery.py",
    "test_duplicates.py", "test_embed.py", "test_expand.py", "test_expand_resume.py", "test_gap_items.py",
    "test_gaps_page.py", "test_image_faults.py", "test_images.py",
    "test_imports.py", "test_map_browser.py", "test_map_clusters.py", "test_match.py", "test_models.py",
    "test_notebook_browser.py",
    "test_notebook_images.py", "test_notebook_taxonomy.py", "test_notebook_vision.py", "test_notebooks_flow.py",
    "test_packaging.py", "test_plan.py", "test_ray_engine.py", "test_review_log.py", "test_stage_contract.py",
    "test_dashboard_markdown.py", "test_plan_dry_run.py", "test_plan_history.py", "test_preflight.py",
    "test_trials.py", "test_trials_browser.py",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in INTEGRATION_FILES:
            item.add_marker(pytest.mark.integration)


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


def plain(text: object) -> str:
    """Dashboard Markdown as a reader sees it: user and model text is escaped with backslashes (`text.md`)."""
    return re.sub(r"\\(.)", r"\1", str(text))


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
