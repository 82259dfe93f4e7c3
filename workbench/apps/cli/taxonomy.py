"""CLI: `init` and the `taxonomy` group's editing commands (import, export, stats, show, add, rename, move,
delete, merge); accept/reject/undo/log are in review.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from workbench.apps.cli.app import WS_ARG, app, open_ws, statuses, taxonomy_app
from workbench.core.errors import ImportProblemsError, WorkbenchError
from workbench.core.workspace import Workspace
from workbench.taxonomy.io import export_taxonomy, import_taxonomy, load_seed, tree_lines
from workbench.taxonomy.model import TASK_TYPES, StatusArg, Taxonomy, TreeIndex, task_type_counts
from workbench.taxonomy.stats import compute_stats


@app.command()
def init(
    directory: Path = typer.Argument(..., help="Folder for the new workspace (created if missing).",
                                     show_default=False),
    seed: bool = typer.Option(False, "--seed", help="Load the bundled hand-written seed task types."),
    name: str | None = typer.Option(None, help="Workspace name written to workbench.toml (default: folder name)."),
):
    """Create a workspace: workbench.toml, workbench.sqlite (WAL) and its folders."""
    ws = Workspace.init(directory, name=name)
    typer.echo(f"created workspace {directory} (edit {directory / 'workbench.toml'} to configure endpoints and CLIP)")
    if seed:
        report = load_seed(Taxonomy.of(ws))
        typer.echo(f"loaded seed task types: {report.created} nodes; {task_type_counts(ws).line()}")


@taxonomy_app.command("import")
def taxonomy_import(
    workspace: Path = WS_ARG,
    source: Path = typer.Argument(..., help="A tasktype.txt (one `~` path per line), a folder tree (one folder per "
                                  "node) or a JSON file.", show_default=False),
    format: str | None = typer.Option(None, "--format", "-f",
                                         help="txt, folder or json (default: detected from the path)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Import the good entries and skip bad ones "
                                  "(default: any error imports nothing)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the source and report; change nothing."),
    status: str = typer.Option("accepted", help="Status of new nodes: accepted or proposed."),
    origin: str = typer.Option("imported", help="Origin of new nodes: imported, seed, manual or generated."),
):
    """Import task types into a workspace. Problems are reported with file and line; on any error nothing changes."""
    ws = open_ws(workspace)
    try:
        report = import_taxonomy(Taxonomy.of(ws), source, fmt=format, skip_bad=skip_bad, dry_run=dry_run,
                                 status=status, origin=origin)
    except ImportProblemsError as exc:
        _print_problems(exc.report.problems)
        raise
    _print_problems(report.problems)
    typer.echo(report.summary())


def _print_problems(problems, limit: int = 30) -> None:
    for p in problems[:limit]:
        typer.echo(p.format(), err=True)
    if len(problems) > limit:
        typer.echo(f"... and {len(problems) - limit} more problem(s)", err=True)


@taxonomy_app.command("export")
def taxonomy_export(
    workspace: Path = WS_ARG,
    dest: Path = typer.Argument(..., help="Output: NAME.txt (one `~` path per task type), NAME.json (nested) "
                                "or a folder (one folder per node).", show_default=False),
    format: str | None = typer.Option(None, "--format", "-f", help="txt, folder or json (default: from DEST)."),
    status: str = typer.Option("live", help="Which nodes: live (proposed+accepted), tasks (the task types the "
                               "stages use), accepted, all, proposed, rejected."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DEST if it exists."),
):
    """Export the taxonomy as tasktype.txt, a folder tree or JSON."""
    ws = open_ws(workspace)
    n = export_taxonomy(Taxonomy.of(ws), dest, fmt=format, statuses=_statuses(status), overwrite=overwrite)
    typer.echo(f"wrote {n} task types to {dest}")


@taxonomy_app.command("stats")
def taxonomy_stats(
    workspace: Path = WS_ARG,
    status: str = typer.Option("tasks", help="Which nodes count: tasks (the task types the stages use: accepted, "
                               "or live with [taxonomy] use_proposed), live, accepted, all, proposed, rejected."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Nodes per level, leaves, depth histogram, branching per level, largest subtree share."""
    ws = open_ws(workspace)
    st = compute_stats(Taxonomy.of(ws), _statuses(status))
    counts = task_type_counts(ws)
    if as_json:
        typer.echo(json.dumps({**st.as_dict(), "task_types_accepted": counts.accepted,
                               "task_types_in_use": counts.in_use, "awaiting_review": counts.awaiting},
                              indent=1))
    else:
        typer.echo("\n".join(st.lines() + [counts.line()]))


def _statuses(value: str) -> StatusArg:
    return TASK_TYPES if value == "tasks" else statuses(value)


@taxonomy_app.command("show")
def taxonomy_show(
    workspace: Path = WS_ARG,
    node: str | None = typer.Option(None, "--node", "-n", help="Show only this node's subtree (id or `~` path)."),
    depth: int | None = typer.Option(None, "--depth", "-d", min=1, help="Show at most this many levels."),
    status: str = typer.Option("all", help="Which nodes: all, live, accepted, proposed, rejected."),
    ids: bool = typer.Option(True, "--ids/--no-ids", help="Print node ids in the first column."),
):
    """Print the tree, indented, with node ids and statuses."""
    ws = open_ws(workspace)
    wanted = statuses(status)
    full = Taxonomy.of(ws).index(None)
    if wanted is None:
        idx = full
    else:  # the matching nodes plus their ancestors, so e.g. proposals show under their accepted parents
        keep = set()
        for nid, n in full.nodes.items():
            if n.status in wanted:
                keep.add(nid)
                keep.update(a.id for a in full.ancestors(nid))
        idx = TreeIndex.build([full.nodes[i] for i in keep])
    root = Taxonomy.of(ws).resolve(node).id if node else None
    if root is not None and root not in idx.nodes:
        raise WorkbenchError(f"node {node!r} is not among the {status} nodes; try --status all")
    lines = tree_lines(idx, max_depth=depth, root=root, show_ids=ids)
    typer.echo("\n".join(lines) if lines else "(empty taxonomy: `workbench taxonomy import` or `init --seed`)")
    if lines:   # on stderr: stdout stays the tree alone, for files and pipes
        typer.echo(task_type_counts(ws).line(), err=True)


@taxonomy_app.command("add")
def taxonomy_add(
    workspace: Path = WS_ARG,
    path: str = typer.Argument(..., help="A `~` path; missing ancestors are created.", show_default=False),
    status: str = typer.Option("accepted", help="accepted or proposed."),
):
    """Add a node (and any missing ancestors) by its `~` path."""
    ws = open_ws(workspace)
    with ws.store.write():   # both counts inside one transaction: another writer cannot skew the difference
        before = Taxonomy.of(ws).count()
        node = Taxonomy.of(ws).add_path(path, status=status)
        created = Taxonomy.of(ws).count() - before
    note = f"  (created {created} node(s))" if created else "  (already there: nothing added)"
    typer.echo(f"{node.id}  {Taxonomy.of(ws).path(node.id)}{note}")


@taxonomy_app.command("rename")
def taxonomy_rename(workspace: Path = WS_ARG,
                    node: str = typer.Argument(..., help="Node id or `~` path.", show_default=False),
                    new_name: str = typer.Argument(..., help="The new name (one level, no `~`).", show_default=False)):
    """Rename a node; its id, children and attached data stay."""
    ws = open_ws(workspace)
    n = Taxonomy.of(ws).rename(node, new_name)
    typer.echo(f"{n.id}  {Taxonomy.of(ws).path(n.id)}")


@taxonomy_app.command("move")
def taxonomy_move(workspace: Path = WS_ARG,
                  node: str = typer.Argument(..., help="Node id or `~` path.", show_default=False),
                  new_parent: str | None = typer.Argument(None, help="New parent id or path; omit to make it "
                                                             "first-level."),
                  ):
    """Move a node (with its subtree) under another parent."""
    ws = open_ws(workspace)
    n = Taxonomy.of(ws).move(node, new_parent)
    typer.echo(f"{n.id}  {Taxonomy.of(ws).path(n.id)}")


@taxonomy_app.command("delete")
def taxonomy_delete(workspace: Path = WS_ARG,
                    node: str = typer.Argument(..., help="Node id or `~` path.", show_default=False),
                    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")):
    """Delete a node, its subtree and everything attached to them."""
    ws = open_ws(workspace)
    n = Taxonomy.of(ws).resolve(node)
    size = len(Taxonomy.of(ws).index(None).subtree(n.id))
    path = Taxonomy.of(ws).path(n.id)
    if not yes:
        if not sys.stdin.isatty():
            raise WorkbenchError(f"deleting {path!r} removes {size} node(s); pass --yes to confirm")
        typer.confirm(f"delete {path!r} and {size - 1} descendant(s)?", abort=True)
    Taxonomy.of(ws).delete(n.id)
    typer.echo(f"deleted {size} node(s)")


@taxonomy_app.command("merge")
def taxonomy_merge(workspace: Path = WS_ARG,
                   victim: str = typer.Argument(..., help="The node that disappears (id or path).", show_default=False),
                   survivor: str = typer.Argument(..., help="The node that stays (id or path).", show_default=False)):
    """Merge VICTIM into SURVIVOR: children and attached data move; the victim's id resolves to the survivor."""
    ws = open_ws(workspace)
    n = Taxonomy.of(ws).merge(victim, survivor)
    typer.echo(f"merged into {n.id}  {Taxonomy.of(ws).path(n.id)}")
