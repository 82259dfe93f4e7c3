"""CLI: `workbench runs` — every stage run with its status, and marking a dead run by hand."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from workbench.apps.cli.app import WS_ARG, app, open_ws
from workbench.core.runs import mark_run_interrupted


@app.command("runs")
def runs_cmd(workspace: Path = WS_ARG,
             stage: str | None = typer.Option(None, "--stage", help="Only this stage (e.g. expand, filter, "
                                                 "referee:glm)."),
             limit: int = typer.Option(20, "--limit", min=1, help="The newest N runs."),
             interrupted: int | None = typer.Option(None, "--interrupted", metavar="RUN_ID",
                                                       help="Mark this 'running' run as interrupted: for a run on "
                                                       "another machine whose process is known to be gone.")):
    """Stage runs, newest first: status (running, done, stopped, failed, interrupted), who ran it, what it did.

    A run whose process died on this machine (killed, crashed) is marked interrupted whenever the workspace is
    opened; while a stage is running, a second process that starts the same stage is refused."""
    ws = open_ws(workspace)
    if interrupted is not None:
        mark_run_interrupted(ws, interrupted)
        typer.echo(f"stage run {interrupted} marked interrupted")
        return
    rows = ws.runs(stage)[:limit]
    if not rows:
        typer.echo("no stage runs yet")
        return
    for r in rows:
        summary = json.loads(r["summary"] or "{}")
        what = summary.get("stopped") or summary.get("error") or ", ".join(
            f"{k} {v}" for k, v in (summary.get("counts") or {}).items())
        who = f"pid {r['pid']}@{r['host']}" if r.get("pid") else ""
        typer.echo(f"{r['id']:>5}  {r['stage']:<18} {r['status']:<11} {r['started_at'][:19]}  {who:<24} {what}"
                   .rstrip())
