"""CLI: the review log — `taxonomy accept|reject ... --proposed [--under] [--run] [--origin]` (their bodies),
`taxonomy undo WS [--n N]`, `taxonomy log WS`. Same library calls as the dashboard's Review page."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.apps.cli.app import WS_ARG, open_ws, taxonomy_app
from workbench.core.errors import WorkbenchError
from workbench.review import decisions as dec
from workbench.taxonomy.model import Taxonomy


def bulk_decide(workspace: Path, status: str, nodes, proposed: bool, under, run, origin, reviewer) -> None:
    """`taxonomy accept|reject`: listed nodes, or the pending proposals a filter picks; one logged batch."""
    verb = "accept" if status == "accepted" else "reject"
    if proposed and nodes:
        raise WorkbenchError(f"taxonomy {verb}: give node ids/paths or --proposed, not both")
    if not proposed and (under or run is not None or origin):
        raise WorkbenchError(f"taxonomy {verb}: --under, --run and --origin select proposals: add --proposed")
    if not proposed and not nodes:
        raise WorkbenchError(f"taxonomy {verb}: name the nodes (ids or `~` paths) or pass --proposed "
                             "[--under NODE] [--run ID] [--origin O]")
    ws = open_ws(workspace)
    if proposed:
        ids = dec.select_proposals(ws, under=under, stage_run_id=run, origin=origin)
        if not ids:
            typer.echo("no pending proposals match (`workbench taxonomy show WORKSPACE --status proposed`)")
            return
    else:
        ids = [Taxonomy.of(ws).resolve(n).id for n in nodes]   # a bad reference fails before anything changes
    counts = dec.bulk_status(ws, ids, status, reviewer=reviewer, source="cli",
                             expect="proposed" if proposed else None)
    extra = dec.bulk_counts_text(counts)
    typer.echo(f"{status} {counts['applied']} node(s)" + (f" ({extra})" if extra else ""))


# Shared by `taxonomy accept` and `taxonomy reject`.
DECIDE_NODES = typer.Argument(None, help="Node ids or `~` paths.", show_default=False)
DECIDE_PROPOSED = typer.Option(False, "--proposed", help="Every pending proposal (narrowed by --under, --run, "
                               "--origin) instead of listed nodes.")
DECIDE_UNDER = typer.Option(None, "--under", help="With --proposed: only this node's subtree.")
DECIDE_RUN = typer.Option(None, "--run", help="With --proposed: only nodes proposed by this stage run "
                          "(`workbench runs` lists them).")
DECIDE_ORIGIN = typer.Option(None, "--origin", help="With --proposed: only this origin (generated, discovered, "
                             "reference, imported, seed, manual).")
DECIDE_REVIEWER = typer.Option(None, "--reviewer", help="Name in the review log (default: OS user).")


@taxonomy_app.command("accept")
def taxonomy_accept(
    workspace: Path = WS_ARG,
    nodes: list[str] | None = DECIDE_NODES, proposed: bool = DECIDE_PROPOSED,
    under: str | None = DECIDE_UNDER, run: int | None = DECIDE_RUN, origin: str | None = DECIDE_ORIGIN,
    reviewer: str | None = DECIDE_REVIEWER,
):
    """Mark nodes accepted (logged with the reviewer; `workbench taxonomy undo` reverses it)."""
    bulk_decide(workspace, "accepted", nodes, proposed, under, run, origin, reviewer)


@taxonomy_app.command("reject")
def taxonomy_reject(
    workspace: Path = WS_ARG,
    nodes: list[str] | None = DECIDE_NODES, proposed: bool = DECIDE_PROPOSED,
    under: str | None = DECIDE_UNDER, run: int | None = DECIDE_RUN, origin: str | None = DECIDE_ORIGIN,
    reviewer: str | None = DECIDE_REVIEWER,
):
    """Mark nodes rejected (kept for the record, left out of task types and exports; logged with the reviewer)."""
    bulk_decide(workspace, "rejected", nodes, proposed, under, run, origin, reviewer)


@taxonomy_app.command("undo")
def undo_cmd(workspace: Path = WS_ARG,
             n: int = typer.Option(1, "--n", "-n", min=1, help="How many of the last decisions (batches) to undo."),
             reviewer: str | None = typer.Option(None, "--reviewer", help="Who undoes (default: OS user).")):
    """Undo the last N logged decisions (a bulk accept is one): status, name and parent back, newest first."""
    ws = open_ws(workspace)
    rows = dec.undo(ws, n, reviewer=reviewer)
    for r in rows:
        typer.echo(f"undone #{r['id']}  {r['action']:<6}  {r['path']}  ({r['new_value']} -> {r['old_value']})")
    typer.echo(f"undid {len(rows)} change(s) in {len({r['batch'] for r in rows})} decision(s)")


@taxonomy_app.command("log")
def log_cmd(workspace: Path = WS_ARG,
            limit: int = typer.Option(50, "--limit", min=1, help="Show this many latest rows.")):
    """The review log: who decided what and when, the value before and after, and what was undone."""
    ws = open_ws(workspace)
    df = dec.review_log(ws, limit=limit)
    if df.empty:
        typer.echo("the review log is empty (decisions from the dashboard, notebooks and `taxonomy accept|reject` "
                   "land here)")
        return
    for r in df.itertuples():
        undone = f"  [undone by {r.undone_by} at {r.undone_at}]" if r.undone_at else ""
        typer.echo(f"#{r.id} batch {r.batch}  {r.at}  {r.reviewer} ({r.source})  {r.action}  {r.path}  "
                   f"{r.old_value!s} -> {r.new_value!s}{undone}")
