"""The `workbench` command line: headless runs of the same library functions the notebooks use.

A user mistake (WorkbenchError) prints one `error: ...` line on stderr and exits with
status 2; set WORKBENCH_DEBUG=1 to see the traceback as well. So does a path the operating
system cannot take (a NUL byte, a name too long, no permission...).

Signals: the console script (`entrypoint`) turns SIGTERM into `Terminated` (a SystemExit, status
143) raised in the main thread, so `with` blocks and `finally` clauses run as they do for Ctrl-C
(KeyboardInterrupt, status 130); either ends with one line on stderr, not a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import sys
import threading
from pathlib import Path
from typing import List, Optional

import typer

from workbench.errors import ImportProblemsError, WorkbenchError

app = typer.Typer(
    help="TaskGalaxy Workbench: build hierarchical vision task taxonomies and the image Q&A data made from them.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]})
taxonomy_app = typer.Typer(help="Import, export, inspect and edit the task taxonomy.", no_args_is_help=True,
                           rich_markup_mode=None)  # plain help: option texts name [sections] of workbench.toml
app.add_typer(taxonomy_app, name="taxonomy")

WS_ARG = typer.Argument(..., help="The workspace folder (made by `workbench init`).", show_default=False)
STATUS_SETS = {"live": ("proposed", "accepted"), "accepted": ("accepted",), "all": None,
               "proposed": ("proposed",), "rejected": ("rejected",)}


def _open(ws: Path):
    from workbench.workspace import Workspace

    return Workspace.open(ws)


def _statuses(value: str):
    if value not in STATUS_SETS:
        raise WorkbenchError(f"--status must be one of {', '.join(STATUS_SETS)}; got {value!r}")
    return STATUS_SETS[value]


def _version(value: bool):
    if value:
        from workbench import __version__

        typer.echo(f"workbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    pass


@app.command()
def init(
    directory: Path = typer.Argument(..., help="Folder for the new workspace (created if missing).",
                                     show_default=False),
    seed: bool = typer.Option(False, "--seed", help="Load the bundled hand-written seed task types."),
    name: Optional[str] = typer.Option(None, help="Workspace name written to workbench.toml (default: folder name)."),
):
    """Create a workspace: workbench.toml, workbench.sqlite (WAL) and its folders."""
    from workbench.taxonomy.io import load_seed
    from workbench.workspace import Workspace

    ws = Workspace.init(directory, name=name)
    typer.echo(f"created workspace {directory} (edit {directory / 'workbench.toml'} to configure endpoints and CLIP)")
    if seed:
        report = load_seed(ws.taxonomy)
        typer.echo(f"loaded seed task types: {report.created} nodes, {len(ws.taxonomy.leaves())} task types")


@taxonomy_app.command("import")
def taxonomy_import(
    workspace: Path = WS_ARG,
    source: Path = typer.Argument(..., help="A tasktype.txt (one `~` path per line), a folder tree (one folder per "
                                  "node) or a JSON file.", show_default=False),
    format: Optional[str] = typer.Option(None, "--format", "-f",
                                         help="txt, folder or json (default: detected from the path)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Import the good entries and skip bad ones "
                                  "(default: any error imports nothing)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the source and report; change nothing."),
    status: str = typer.Option("accepted", help="Status of new nodes: accepted or proposed."),
    origin: str = typer.Option("imported", help="Origin of new nodes: imported, seed, manual or generated."),
):
    """Import task types into a workspace. Problems are reported with file and line; on any error nothing changes."""
    from workbench.taxonomy.io import import_taxonomy

    ws = _open(workspace)
    try:
        report = import_taxonomy(ws.taxonomy, source, fmt=format, skip_bad=skip_bad, dry_run=dry_run,
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
    format: Optional[str] = typer.Option(None, "--format", "-f", help="txt, folder or json (default: from DEST)."),
    status: str = typer.Option("live", help="Which nodes: live (proposed+accepted), accepted, all, proposed, "
                               "rejected."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DEST if it exists."),
):
    """Export the taxonomy as tasktype.txt, a folder tree or JSON."""
    from workbench.taxonomy.io import export_taxonomy

    ws = _open(workspace)
    n = export_taxonomy(ws.taxonomy, dest, fmt=format, statuses=_statuses(status), overwrite=overwrite)
    typer.echo(f"wrote {n} task types to {dest}")


@taxonomy_app.command("stats")
def taxonomy_stats(
    workspace: Path = WS_ARG,
    status: str = typer.Option("live", help="Which nodes count: live, accepted, all, proposed, rejected."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Nodes per level, leaves, depth histogram, branching per level, largest subtree share."""
    from workbench.taxonomy.stats import compute_stats

    ws = _open(workspace)
    st = compute_stats(ws.taxonomy, _statuses(status))
    if as_json:
        typer.echo(json.dumps(st.as_dict(), indent=1))
    else:
        typer.echo("\n".join(st.lines()))


@taxonomy_app.command("show")
def taxonomy_show(
    workspace: Path = WS_ARG,
    node: Optional[str] = typer.Option(None, "--node", "-n", help="Show only this node's subtree (id or `~` path)."),
    depth: Optional[int] = typer.Option(None, "--depth", "-d", min=1, help="Show at most this many levels."),
    status: str = typer.Option("all", help="Which nodes: all, live, accepted, proposed, rejected."),
    ids: bool = typer.Option(True, "--ids/--no-ids", help="Print node ids in the first column."),
):
    """Print the tree, indented, with node ids and statuses."""
    from workbench.taxonomy.io import tree_lines

    from workbench.taxonomy.model import TreeIndex

    ws = _open(workspace)
    wanted = _statuses(status)
    full = ws.taxonomy.index(None)
    if wanted is None:
        idx = full
    else:  # the matching nodes plus their ancestors, so e.g. proposals show under their accepted parents
        keep = set()
        for nid, n in full.nodes.items():
            if n.status in wanted:
                keep.add(nid)
                keep.update(a.id for a in full.ancestors(nid))
        idx = TreeIndex.build([full.nodes[i] for i in keep])
    root = ws.taxonomy.resolve(node).id if node else None
    if root is not None and root not in idx.nodes:
        raise WorkbenchError(f"node {node!r} is not among the {status} nodes; try --status all")
    lines = tree_lines(idx, max_depth=depth, root=root, show_ids=ids)
    typer.echo("\n".join(lines) if lines else "(empty taxonomy: `workbench taxonomy import` or `init --seed`)")


@taxonomy_app.command("add")
def taxonomy_add(
    workspace: Path = WS_ARG,
    path: str = typer.Argument(..., help="A `~` path; missing ancestors are created.", show_default=False),
    status: str = typer.Option("accepted", help="accepted or proposed."),
):
    """Add a node (and any missing ancestors) by its `~` path."""
    ws = _open(workspace)
    with ws.store.write():   # both counts inside one transaction: another writer cannot skew the difference
        before = ws.taxonomy.count()
        node = ws.taxonomy.add_path(path, status=status)
        created = ws.taxonomy.count() - before
    note = f"  (created {created} node(s))" if created else "  (already there: nothing added)"
    typer.echo(f"{node.id}  {ws.taxonomy.path(node.id)}{note}")


@taxonomy_app.command("rename")
def taxonomy_rename(workspace: Path = WS_ARG,
                    node: str = typer.Argument(..., help="Node id or `~` path.", show_default=False),
                    new_name: str = typer.Argument(..., help="The new name (one level, no `~`).", show_default=False)):
    """Rename a node; its id, children and attached data stay."""
    ws = _open(workspace)
    n = ws.taxonomy.rename(node, new_name)
    typer.echo(f"{n.id}  {ws.taxonomy.path(n.id)}")


@taxonomy_app.command("move")
def taxonomy_move(workspace: Path = WS_ARG,
                  node: str = typer.Argument(..., help="Node id or `~` path.", show_default=False),
                  new_parent: Optional[str] = typer.Argument(None, help="New parent id or path; omit to make it "
                                                             "first-level."),
                  ):
    """Move a node (with its subtree) under another parent."""
    ws = _open(workspace)
    n = ws.taxonomy.move(node, new_parent)
    typer.echo(f"{n.id}  {ws.taxonomy.path(n.id)}")


@taxonomy_app.command("delete")
def taxonomy_delete(workspace: Path = WS_ARG,
                    node: str = typer.Argument(..., help="Node id or `~` path.", show_default=False),
                    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")):
    """Delete a node, its subtree and everything attached to them."""
    ws = _open(workspace)
    n = ws.taxonomy.resolve(node)
    size = len(ws.taxonomy.index(None).subtree(n.id))
    path = ws.taxonomy.path(n.id)
    if not yes:
        if not sys.stdin.isatty():
            raise WorkbenchError(f"deleting {path!r} removes {size} node(s); pass --yes to confirm")
        typer.confirm(f"delete {path!r} and {size - 1} descendant(s)?", abort=True)
    ws.taxonomy.delete(n.id)
    typer.echo(f"deleted {size} node(s)")


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
    nodes: Optional[List[str]] = DECIDE_NODES, proposed: bool = DECIDE_PROPOSED,
    under: Optional[str] = DECIDE_UNDER, run: Optional[int] = DECIDE_RUN, origin: Optional[str] = DECIDE_ORIGIN,
    reviewer: Optional[str] = DECIDE_REVIEWER,
):
    """Mark nodes accepted (logged with the reviewer; `workbench taxonomy undo` reverses it)."""
    from workbench.commands.review import bulk_decide

    bulk_decide(workspace, "accepted", nodes, proposed, under, run, origin, reviewer)


@taxonomy_app.command("reject")
def taxonomy_reject(
    workspace: Path = WS_ARG,
    nodes: Optional[List[str]] = DECIDE_NODES, proposed: bool = DECIDE_PROPOSED,
    under: Optional[str] = DECIDE_UNDER, run: Optional[int] = DECIDE_RUN, origin: Optional[str] = DECIDE_ORIGIN,
    reviewer: Optional[str] = DECIDE_REVIEWER,
):
    """Mark nodes rejected (kept for the record, left out of task types and exports; logged with the reviewer)."""
    from workbench.commands.review import bulk_decide

    bulk_decide(workspace, "rejected", nodes, proposed, under, run, origin, reviewer)


@taxonomy_app.command("merge")
def taxonomy_merge(workspace: Path = WS_ARG,
                   victim: str = typer.Argument(..., help="The node that disappears (id or path).", show_default=False),
                   survivor: str = typer.Argument(..., help="The node that stays (id or path).", show_default=False)):
    """Merge VICTIM into SURVIVOR: children and attached data move; the victim's id resolves to the survivor."""
    ws = _open(workspace)
    n = ws.taxonomy.merge(victim, survivor)
    typer.echo(f"merged into {n.id}  {ws.taxonomy.path(n.id)}")


# Modules under workbench/commands/ that add commands to `app` (one per area).
COMMAND_MODULES: list[str] = ["demo", "models", "expand", "review", "images", "vision", "adjudicate", "discover", "audit",
                               "plan", "batches", "runs", "dashboard"]


def _load_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"workbench.commands.{name}")


class Terminated(SystemExit):
    """SIGTERM arrived (see `install_signal_handlers`). A SystemExit, so `except Exception` does not swallow it
    while context managers and `finally` clauses see it on the way out, as they see KeyboardInterrupt."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(128 + signum)
        self.signum = signum


_signals_seen: list[int] = []   # set by the handlers below; main() words its last line from it


def _on_sigterm(signum, frame):
    _signals_seen.append(signum)
    signal.signal(signum, signal.SIG_DFL)   # a second SIGTERM during the clean-up ends the process at once
    raise Terminated(signum)


def _on_sigint(signum, frame):
    _signals_seen.append(signum)
    signal.default_int_handler(signum, frame)   # KeyboardInterrupt, as always


def install_signal_handlers() -> None:
    """SIGTERM unwinds like Ctrl-C (raises `Terminated` in the main thread). Signals that were set to be ignored
    (nohup, a parent's choice) stay ignored. Called by the console script only, not by `main()` itself, so
    in-process callers (tests, notebooks) keep their own handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def _stopped_message(signum: int) -> str:
    how = "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})"
    return f"{how}; everything finished so far is saved in the workspace"


def main(argv: list[str] | None = None) -> int:
    try:  # typer >= 0.20 vendors its own copy of click
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc

    args = list(sys.argv[1:] if argv is None else argv)
    del _signals_seen[:]
    try:
        _load_commands()
        rv = app(args=argv, standalone_mode=False, prog_name="workbench")
        if rv == 130 and signal.SIGINT in _signals_seen:   # typer turns Ctrl-C into a quiet exit 130
            typer.echo(_stopped_message(signal.SIGINT), err=True)
        return rv if isinstance(rv, int) else 0
    except Terminated as exc:
        typer.echo(_stopped_message(exc.signum), err=True)
        return exc.code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except click_exc.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help(), err=True)
        return 2
    except click_exc.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _fail(exc.format_message() + hint)
        return 2
    except click_exc.ClickException as exc:
        _fail(exc.format_message())
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except WorkbenchError as exc:
        _fail(str(exc))
        return 2
    except sqlite3.DatabaseError as exc:
        _fail(f"workspace database error: {exc}; is this file a workbench workspace, and is the disk full?")
        return 2
    except KeyboardInterrupt:
        typer.echo(_stopped_message(signal.SIGINT), err=True)
        return 130
    except ValueError as exc:
        if "null byte" not in str(exc):
            raise   # a bug: keep the traceback
        bad = [a for a in args if "\0" in a]
        what = f"argument {_short(bad[0])}" if bad else "a path (from an argument or workbench.toml)"
        _fail(f"{what} contains a NUL byte (\\x00), which no file name can hold; check how it was typed or quoted")
        return 2
    except OSError as exc:
        if exc.filename is None or exc.errno is None:
            raise   # not about a file the user named (a socket, a bug): keep the traceback
        _fail(_os_error_message(exc))
        return 2
    return 0


def _short(value, limit: int = 80) -> str:
    """repr() of a user-given value, shortened in the middle when long (a 4,000-character path helps no one)."""
    text = repr(os.fsdecode(value) if isinstance(value, bytes) else str(value))
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]}...{text[-limit // 2:]} ({len(text) - 2} characters)"


def _os_error_message(exc: OSError) -> str:
    where = _short(exc.filename) + (f" -> {_short(exc.filename2)}" if exc.filename2 is not None else "")
    reason = exc.strerror or os.strerror(exc.errno)
    hint = {
        errno.ENAMETOOLONG: "; a file or folder name may have at most 255 bytes, a whole path 4,096",
        errno.EACCES: "; check the permissions, or choose another place",
        errno.EPERM: "; check the permissions, or choose another place",
        errno.ENOSPC: "; free some disk space and run it again",
        errno.EROFS: "; choose a writable place",
    }.get(exc.errno, "")
    return f"{where}: {reason}{hint}"


def _fail(message: str) -> None:
    if os.environ.get("WORKBENCH_DEBUG"):
        import traceback

        traceback.print_exc()
    typer.echo(f"error: {message}", err=True)


def entrypoint() -> None:
    install_signal_handlers()
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
