"""CLI: `workbench batches` — the OpenAI Batch API batches of a workspace, and cancelling one."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.apps.cli.app import WS_ARG, app, open_ws
from workbench.llm.batch import cancel_batch, list_batches


@app.command("batches")
def batches_cmd(workspace: Path = WS_ARG,
                cancel: str | None = typer.Option(None, "--cancel", help="Cancel this batch (the provider's id "
                                                     "or the # shown here); its finished lines are still ingested, "
                                                     "the rest are asked by the next run."),
                refresh: bool = typer.Option(False, "--refresh", help="Ask the provider for the current state of "
                                             "every live batch first.")):
    """Batches submitted by `--batch` runs: state (validating, in progress, finalizing, completed, expired,
    failed, cancelled), requests done and failed, and whether their results are in the workspace."""
    ws = open_ws(workspace)
    if cancel:
        b = cancel_batch(ws, cancel)
        typer.echo(f"batch {b['batch_id']}: {b['status'].replace('_', ' ')}")
        return
    rows = list_batches(ws, refresh=refresh)
    if not rows:
        typer.echo("no batches (run a stage with --batch)")
        return
    for r in rows:
        state = r["status"].replace("_", " ")
        done = f"{r['n_completed']:,} done, {r['n_failed']:,} failed of {r['n_requests']:,}"
        ingested = "results in the workspace" if r["ingested_at"] else "results not ingested yet"
        err = f"; {r['error']}" if r["error"] else ""
        typer.echo(f"#{r['id']} {r['batch_id'] or '(not submitted)'}  {r['stage']} ({r['endpoint']}: {r['model']}), "
                   f"attempt {r['attempt']}: {state}; {done}; {ingested}; created {r['created_at']}{err}")
