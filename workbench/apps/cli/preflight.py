"""CLI: `workbench preflight` — the checks before paying for a large run (workbench/apps/preflight.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.apps.cli.app import WS_ARG, app, open_ws
from workbench.apps.preflight import preflight


@app.command("preflight")
def preflight_cmd(workspace: Path = WS_ARG,
                  images: int | None = typer.Option(None, "--images", min=0, help="Hold the plan for this many "
                                                    "images against the budget (default: the registered ones)."),
                  offline: bool = typer.Option(False, "--offline", help="Do not probe the endpoints.")):
    """Check the taxonomy, endpoints, prices and budget before a large run; exit 1 with the reasons when a
    check fails (each finding names the nodes and the fix)."""
    report = preflight(open_ws(workspace), images=images, offline=offline)
    typer.echo(report.text())
    raise typer.Exit(1 if report.failed else 0)
