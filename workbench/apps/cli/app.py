"""The `workbench` typer application and what every command module shares: the workspace argument, opening a
workspace, the --status sets. Command modules (one per area) import this and register their commands on `app`;
`main.py` imports them all and runs the application."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace

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


def open_ws(ws: Path) -> Workspace:
    return Workspace.open(ws)


def statuses(value: str) -> tuple[str, ...] | None:
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
