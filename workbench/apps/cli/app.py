"""The `workbench` typer application and what every command module shares: the workspace argument, opening a
workspace, the --status sets. Command modules (one per area) import this and register their commands on `app`.

Commands load lazily. A command module imports the library it drives at its top (stages, analysis, pandas...),
so importing every one of them costs seconds that `workbench --help` should not pay. `COMMANDS` names, for each
command and each `taxonomy` and `gaps` subcommand, the module that registers it and its one-line help. The groups built
from it (`LazyGroup`: the root and `taxonomy`) list their commands from the table and import a command's module
only when that command is looked up to run or to show its own help. `tests/test_cli_startup.py` checks the table
against what the modules register, so it cannot drift.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from workbench import __version__
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace

try:  # typer >= 0.20 vendors its own copy of click
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click

# Command path: (the module of workbench.apps.cli that registers it, its help's first sentence). In the order
# `--help` lists them. `taxonomy` and `gaps` are registered here; their subcommands by taxonomy.py, review.py,
# expand.py and gaps.py.
COMMANDS: dict[str, tuple[str, str]] = {
    "adjudicate": ("adjudicate", "Vote on or flag samples by hand, and list the samples a person should decide "
                   "first."),
    "audit": ("audit", "Assign every item's first instruction to our task types (sentence embeddings, top-k with "
              "scores); store per-task-type counts, the task types with none, the most over-represented and the "
              "long tail."),
    "batches": ("batches", "Batches submitted by `--batch` runs: state (validating, in progress, finalizing, "
                "completed, expired, failed, cancelled), requests done and failed, and whether their results are "
                "in the workspace."),
    "dashboard": ("dashboard", "Open the dashboard (overview, coverage, images per task, embedding map, referees, "
                  "prompts)."),
    "map": ("dashboard", "Compute and store the embedding map's projection headless, so the dashboard only loads "
            "it."),
    "demo": ("demo", "Build a workspace from the seed tasks and real photographs, run what runs offline, open the "
             "dashboard."),
    "doctor": ("doctor", "Check packages, CLIP weights, endpoints and keys (by name only); say what each missing "
               "piece disables."),
    "discover": ("discover", "Cluster the images no task type fits (filter rejected every candidate, or a low best "
                 "match) and ask the VLM to name one task type per cluster; each becomes a `proposed` node with "
                 "origin 'discovered'."),
    "expand": ("expand", "Ask the LLM for new task types, one call per parent; new names become `proposed` nodes."),
    "embed": ("images", "CLIP-embed task types and images with the model in workbench.toml [clip] (cached; "
              "resumable)."),
    "match": ("images", "Top-k task types per image by cosine similarity (embeds what is missing first; "
              "incremental)."),
    "plan": ("plan", "Estimate calls, tokens, cost (list and batch price) and wall time for every stage, from what "
             "this workspace has measured (a pilot run); calls already answered are not counted again."),
    "prompts": ("prompts", "Prompt trials: versions x a test set, their history, and promoting a version."),
    "preflight": ("preflight", "Check the taxonomy, endpoints, prices and budget before a large run; exit 1 with "
                  "the reasons when a check fails (each finding names the nodes and the fix)."),
    "runs": ("runs", "Stage runs, newest first: status (running, done, stopped, failed, interrupted), who ran it, "
             "what it did."),
    "init": ("taxonomy", "Create a workspace: workbench.toml, workbench.sqlite (WAL) and its folders."),
    "filter": ("vision", "The VLM keeps the CLIP candidate task types that fit each image."),
    "qa": ("vision", "The VLM writes one question-answer pair per kept (image, task type)."),
    "referee": ("vision", "The configured referees vote 1/0 on the Q&A samples (adaptively unless --full)."),
    "select": ("vision", "Keep samples the referees pass (k-of-N votes or Dawid-Skene posterior), with per-task "
               "caps/floors and a total budget."),
    "export": ("vision", "Export the selected samples for training (same inputs give byte-identical files)."),
    "funnel": ("vision", "How many (image, task type) pairs and samples survive each stage."),
    "rejections": ("vision", "Every row a stage dropped, with its reason."),
    "taxonomy": ("app", "Import, export, inspect and edit the task taxonomy."),
    "images": ("images", "Register images and list the files that could not be used."),
    "models": ("models", "Pull, list and verify the models of a profile (small: CPU, paper: the paper's)."),
    "taxonomy duplicates": ("expand", "List near-duplicate task names as merge suggestions (exact after "
                            "normalisation, or by embeddings)."),
    "taxonomy coverage": ("expand", "Map each reference task to its best and runner-up task types; list the gaps, "
                          "grouped by the reference's first level and by ours, and our first-level areas the "
                          "reference never tests."),
    "taxonomy accept": ("review", "Mark nodes accepted (logged with the reviewer; `workbench taxonomy undo` "
                        "reverses it)."),
    "taxonomy reject": ("review", "Mark nodes rejected (kept for the record, left out of task types and exports; "
                        "logged with the reviewer)."),
    "taxonomy undo": ("review", "Undo the last N logged decisions (a bulk accept is one): status, name and parent "
                      "back, newest first."),
    "taxonomy log": ("review", "The review log: who decided what and when, the value before and after, and what "
                     "was undone."),
    "taxonomy import": ("taxonomy", "Import task types into a workspace."),
    "taxonomy export": ("taxonomy", "Export the taxonomy as tasktype.txt, a folder tree or JSON."),
    "taxonomy stats": ("taxonomy", "Nodes per level, leaves, depth histogram, branching per level, largest "
                       "subtree share."),
    "taxonomy show": ("taxonomy", "Print the tree, indented, with node ids and statuses."),
    "taxonomy add": ("taxonomy", "Add a node (and any missing ancestors) by its `~` path."),
    "taxonomy rename": ("taxonomy", "Rename a node; its id, children and attached data stay."),
    "taxonomy move": ("taxonomy", "Move a node (with its subtree) under another parent."),
    "taxonomy delete": ("taxonomy", "Delete a node, its subtree and everything attached to them."),
    "taxonomy merge": ("taxonomy", "Merge VICTIM into SURVIVOR: children and attached data move; the victim's id "
                       "resolves to the survivor."),
    "gaps": ("app", "From a gap to what is behind it and to an action: show, propose, flag."),
    "gaps show": ("gaps", "Show the images, samples and audited items behind a gap: a category, a task type, a "
                  "reference gap or a discovered cluster."),
    "gaps propose": ("gaps", "Add a `proposed` task type for a gap, under the nearest task type's parent, with "
                     "where it came from."),
    "gaps flag": ("gaps", "Flag the Q&A samples behind a gap (left out of selection and export until unflagged)."),
}


class NotLoaded(TyperCommand):
    """Stands in a group for a command of `COMMANDS` whose module is not imported yet: it carries the table's
    help, so the group's help, its order and its "Did you mean" suggestions work without the module."""

    def __init__(self, name: str, module: str, help: str) -> None:
        super().__init__(name, help=help)
        self.module = module


class LazyGroup(TyperGroup):
    """A typer group (`typer.Typer(cls=LazyGroup)`) whose commands of `COMMANDS` are imported when needed.

    Typer builds the click group from what is registered on the `typer.Typer` each time the application runs;
    this class fills the gaps with `NotLoaded` stand-ins, in the table's order, and `get_command` (what click
    calls to run a command or show its help) swaps a stand-in for the real command by importing its module and
    building `app` again. Commands registered on `app` some other way (tests' probe commands) work as usual."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        prefix = f"{self.name} " if self.name else ""
        mine = {path.removeprefix(prefix): entry for path, entry in COMMANDS.items()
                if path.startswith(prefix) and " " not in path.removeprefix(prefix)}
        registered = dict(self.commands)
        self.commands.clear()
        for name, (module, help) in mine.items():
            self.commands[name] = registered.pop(name, None) or NotLoaded(name, module, help)
        self.commands.update(registered)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        stand_in = self.commands.get(cmd_name)
        if isinstance(stand_in, NotLoaded):
            importlib.import_module(f"{__package__}.{stand_in.module}")   # registers its commands on `app`
            fresh = typer.main.get_command(app)
            if self.name:
                fresh = fresh.commands[self.name]
            for name, cmd in fresh.commands.items():
                if isinstance(self.commands.get(name), NotLoaded) and not isinstance(cmd, NotLoaded):
                    self.commands[name] = cmd
            if isinstance(self.commands[cmd_name], NotLoaded):   # a stale COMMANDS entry: a bug, not a user error
                raise RuntimeError(f"{stand_in.module}.py registers no command {cmd_name!r}; fix COMMANDS in app.py")
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The Commands section of the help, from the commands and stand-ins as they are (importing nothing)."""
        rows = [(name, cmd) for name, cmd in self.commands.items() if not cmd.hidden]
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])


app = typer.Typer(
    cls=LazyGroup,
    help="TaskGalaxy Workbench: build hierarchical vision task taxonomies and the image Q&A data made from them.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]})
taxonomy_app = typer.Typer(cls=LazyGroup, help=COMMANDS["taxonomy"][1], no_args_is_help=True,
                           rich_markup_mode=None)  # plain help: option texts name [sections] of workbench.toml
app.add_typer(taxonomy_app, name="taxonomy")
gaps_app = typer.Typer(cls=LazyGroup, help=COMMANDS["gaps"][1], no_args_is_help=True, rich_markup_mode=None)
app.add_typer(gaps_app, name="gaps")

WS_ARG = typer.Argument(..., help="The workspace folder (made by `workbench init`).", show_default=False)
STATUS_SETS = {"live": ("proposed", "accepted"), "accepted": ("accepted",), "all": None,
               "proposed": ("proposed",), "rejected": ("rejected",)}


def open_ws(ws: Path) -> Workspace:
    """Open a workspace; the first time after proposals stopped being task types, say once what changed."""
    from workbench.taxonomy.model import first_open_notice  # lazy: `--help` imports no library layer

    opened = Workspace.open(ws)
    notice = first_open_notice(opened)
    if notice:
        typer.echo(notice, err=True)
    return opened


def statuses(value: str) -> tuple[str, ...] | None:
    if value not in STATUS_SETS:
        raise WorkbenchError(f"--status must be one of {', '.join(STATUS_SETS)}; got {value!r}")
    return STATUS_SETS[value]


def _version(value: bool):
    if value:
        typer.echo(f"workbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    pass
