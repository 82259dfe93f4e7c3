"""CLI: `workbench doctor` — what this environment can do, and what each missing piece disables
(the checks are in workbench/apps/doctor.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.apps.cli.app import app
from workbench.apps.doctor import run_checks
from workbench.core.config import Config
from workbench.core.workspace import Workspace


@app.command()
def doctor(
    workspace: Path | None = typer.Argument(None, help="Check this workspace's settings (default: the "
                                               "defaults of a new workspace)."),
    imports: bool = typer.Option(False, "--imports", help="Also import every package, which finds an install "
                                 "that does not import (e.g. a torch/torchvision mismatch); takes tens of "
                                 "seconds (default: a package counts when it is installed)."),
):
    """Check packages, CLIP weights, endpoints and keys (by name only); say what each missing piece disables."""
    config = Workspace.open(workspace).config if workspace else Config()
    checks = run_checks(config, imports=imports)
    for c in checks:
        typer.echo(c.line())
    missing = [c for c in checks if not c.ok]
    typer.echo(f"\n{len(checks) - len(missing)} ok, {len(missing)} missing")
    if not imports:
        typer.echo("(packages were found installed, not imported: `workbench doctor --imports` imports them too)")
