"""CLI: `workbench plan` — what a run will cost and take, before it is paid for (workbench/analysis/plan.py)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from workbench.analysis.plan import make_plan
from workbench.analysis.plan_history import explain
from workbench.apps.cli.app import WS_ARG, app, open_ws
from workbench.taxonomy.model import task_type_counts


@app.command("plan")
def plan_cmd(workspace: Path = WS_ARG,
             images: int | None = typer.Option(None, "--images", min=0, help="Plan for this many images "
                                                  "(default: the registered ones); rates come from the pilot."),
             through: str = typer.Option("export", "--through", help="Last stage to plan: expand, embed, match, "
                                         "filter, qa, referee, select or export."),
             as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON.")):
    """Estimate calls, tokens, cost (list and batch price) and wall time for every stage, from what this
    workspace has measured (a pilot run); calls already answered are not counted again."""
    ws = open_ws(workspace)
    plan = make_plan(ws, images=images, through=through)
    explain(ws, plan, images=images, remember=True)
    if as_json:
        typer.echo(json.dumps(plan.as_dict(), indent=1, default=str))
    else:
        typer.echo(plan.table())
        typer.echo(task_type_counts(ws).line())   # the plan covers accepted task types (or all, with use_proposed)
