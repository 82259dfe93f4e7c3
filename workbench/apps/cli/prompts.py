"""CLI: `workbench prompts trial | trials | promote`, over `analysis/trials/`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from workbench.analysis.trials import TestSet, Trial, diff_versions, list_trials, promote, run_trial
from workbench.apps.cli.app import WS_ARG, app, open_ws

prompts_app = typer.Typer(help="Prompt trials: versions x a test set, their history, and promoting a version.",
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(prompts_app, name="prompts")

STAGE = typer.Option(..., "--stage", help="expand:level1_supplement, expand:child_supplement, "
                     "expand:child_expand, filter, qa, referee[:NAME], audit_label, coverage_confirm, "
                     "discover_name.", show_default=False)


def _print_trial(trial: Trial, ws, *, width: int = 60) -> None:
    typer.echo(trial.summary())
    m = trial.matrix()
    pd.set_option("display.max_colwidth", width)
    pd.set_option("display.width", 200)
    cells = m.drop(columns=["item", "image_id"]).copy()
    for c in cells.columns:
        cells[c] = cells[c].map(lambda s: " / ".join(str(s).splitlines()) if s is not None else "")
    typer.echo(cells.to_string(index=False))
    typer.echo("")
    typer.echo(trial.metrics(ws).to_string())


@prompts_app.command("trial")
def trial_cmd(workspace: Path = WS_ARG, stage: str = STAGE,
              version: list[str] = typer.Option(..., "--version", help="A prompt version: a .j2 file, `current` "
                                                "(what the stage uses now) or a stored version's hash; give it once "
                                                "per version.", show_default=False),
              rows: int = typer.Option(5, "--rows", min=0, help="How many items to draw at random (0: every item "
                                       "the filters leave)."),
              seed: int = typer.Option(0, "--seed", help="The random draw's seed."),
              item: list[str] = typer.Option([], "--item", help="An item chosen by hand (parent node id, image id, "
                                             "sample id; coverage_confirm: 'reference path|task path'); repeatable."),
              test_set: str | None = typer.Option(None, "--test-set", help="Run on this stored test set (or save "
                                                  "the drawn one under this name)."),
              level: int | None = typer.Option(None, "--level", min=1, help="expand: parents of this level only."),
              subtree: str | None = typer.Option(None, "--subtree", help="Only items under this node (id or path)."),
              disagreement: bool = typer.Option(False, "--disagreement", help="referee: only samples the machine "
                                                "referees split on."),
              gap: bool = typer.Option(False, "--gap", help="filter/qa: only images whose filter kept nothing."),
              assertion: list[str] = typer.Option([], "--assert", help="non-empty, regex:PATTERN, not-parent, "
                                                  "max-chars:N or rubric:TEXT (an LLM grades each reply on the "
                                                  "default endpoint); a pass rate per version. Repeatable."),
              dry_run: bool = typer.Option(False, "--dry-run", help="Calls, tokens and cost per version; call "
                                           "nothing, store nothing."),
              budget: float | None = typer.Option(None, "--budget", min=0, help="USD for the whole trial."),
              endpoint: str | None = typer.Option(None, "--endpoint", help="Endpoint name (default: the stage's).")):
    """Run prompt versions side by side on a test set; nothing in the workspace's data changes."""
    ws = open_ws(workspace)
    if item:
        ts = TestSet.of(ws, stage, item, name=test_set or "", assertions=assertion)
    elif test_set and ws.store.scalar("SELECT 1 FROM trial_test_sets WHERE name=?", (test_set,)):
        ts = TestSet.load(ws, test_set)
        ts.assertions = assertion or ts.assertions
    else:
        ts = TestSet.random(ws, stage, rows, seed, name=test_set or "", level=level, subtree=subtree,
                            disagreement=disagreement, gap=gap, assertions=assertion)
    trial = run_trial(ws, stage, version, ts, budget_usd=budget, dry_run=dry_run, endpoint=endpoint)
    if dry_run:
        typer.echo(trial.summary())
        raise typer.Exit(0)
    _print_trial(trial, ws)
    typer.echo(f"stored as trial {trial.id}: `workbench prompts trials {workspace} --show {trial.id}` reopens it")
    if trial.failed:
        typer.echo(f"error: trial {trial.id}: no version gave a readable reply; first errors:", err=True)
        for e in trial.errors[:5]:
            typer.echo(f"  {e}", err=True)
        raise typer.Exit(1)
    if trial.status == "stopped":
        typer.echo(f"error: trial {trial.id} stopped early; see the cells marked 'not run'", err=True)
        raise typer.Exit(1)


@prompts_app.command("trials")
def trials_cmd(workspace: Path = WS_ARG,
               show: int | None = typer.Option(None, "--show", help="Reopen this trial: its matrix and figures."),
               diff: list[str] = typer.Option([], "--diff", help="Two version hashes to diff (give --diff twice).")):
    """Every stored trial, newest first (who, when, stage, versions, rows, outcome); --show ID reopens one."""
    ws = open_ws(workspace)
    if len(diff) == 2:
        typer.echo(diff_versions(ws, diff[0], diff[1]) or "(same text)")
        return
    if show is not None:
        _print_trial(Trial.load(ws, show), ws)
        return
    table = list_trials(ws)
    if table.empty:
        typer.echo("no trials yet: `workbench prompts trial WS --stage qa --version current --version FILE`")
        return
    typer.echo(table.drop(columns=["error"]).to_string(index=False))


@prompts_app.command("promote")
def promote_cmd(workspace: Path = WS_ARG, stage: str = STAGE,
                version: str = typer.Option(..., "--version", help="A .j2 file or a stored version's hash.",
                                            show_default=False),
                level: int | None = typer.Option(None, "--level", min=1, help="expand: 1 for the first level's "
                                                 "template (levels 2+: name expand:child_supplement or "
                                                 "expand:child_expand as the stage).")):
    """Make a version what the stage uses from now on, and print the template every level and stage uses."""
    ws = open_ws(workspace)
    typer.echo(promote(ws, stage, version, level=level))
