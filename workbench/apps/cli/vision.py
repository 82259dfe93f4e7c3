"""CLI for the vision stages: filter, qa, referee, select, export, funnel, rejections."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.analysis.funnel import funnel, rejections
from workbench.apps.cli.app import WS_ARG, app, open_ws
from workbench.apps.cli.report import show_run as _show
from workbench.core.errors import WorkbenchError
from workbench.engine import session
from workbench.stages.export.stage import ExportStage
from workbench.stages.filter.stage import run_filter
from workbench.stages.qa.stage import run_qa
from workbench.stages.referee.stage import run_referees
from workbench.stages.select.stage import select
from workbench.taxonomy.model import task_type_counts

DRY = typer.Option(False, "--dry-run", help="Report calls, estimated tokens and cost; call nothing.")
BUDGET = typer.Option(None, "--budget", min=0, help="Stop cleanly before spending more than this many USD "
                      "(default: limits.budget_usd in workbench.toml).")
REFRESH = typer.Option(False, "--refresh-failed", help="Ask again where the stored reply could not be read "
                       "(otherwise every answered call comes from the cache).")
LIMIT = typer.Option(None, "--limit", min=1, help="Only the first N images (or samples), e.g. to try a prompt.")
BATCH = typer.Option(False, "--batch", help="Send the calls through the OpenAI Batch API (about half price, results "
                     "within [batch] completion_window): submit, poll, ingest; run the same command again to resume "
                     "polling after a stop. `workbench batches` lists them.")
ENGINE = typer.Option("local", "--engine", help="local (this process) or ray: the calls are made by Ray workers "
                      "(a private loopback Ray, or the cluster at --address); replies are committed here.")
ADDRESS = typer.Option(None, "--address", help="With --engine ray: join this Ray cluster (host:6379 or "
                       "ray://host:10001; default: start a private local Ray).")


@app.command("filter")
def filter_cmd(workspace: Path = WS_ARG, dry_run: bool = DRY, budget: float | None = BUDGET,
               limit: int | None = LIMIT, refresh_failed: bool = REFRESH, batch: bool = BATCH,
               engine: str = ENGINE, address: str | None = ADDRESS,
               prompt: str | None = typer.Option(None, "--prompt", help="Prompt file (default: [filter] prompt "
                                                    "or prompts/filter.j2)."),
               endpoint: str | None = typer.Option(None, "--endpoint", help="Endpoint name from workbench.toml "
                                                      "(default: [filter] endpoint).")):
    """The VLM keeps the CLIP candidate task types that fit each image."""
    ws = open_ws(workspace)
    with session(engine, address):
        rep = run_filter(ws, dry_run=dry_run, budget_usd=budget, limit=limit, prompt=prompt, endpoint=endpoint,
                         refresh_failed=refresh_failed, batch=batch or None)
    typer.echo(task_type_counts(ws).line())
    raise typer.Exit(_show(rep, ws.config.limits.max_failure_rate))


@app.command("qa")
def qa_cmd(workspace: Path = WS_ARG, dry_run: bool = DRY, budget: float | None = BUDGET,
           limit: int | None = LIMIT, refresh_failed: bool = REFRESH, batch: bool = BATCH,
           engine: str = ENGINE, address: str | None = ADDRESS,
           prompt: str | None = typer.Option(None, "--prompt", help="Prompt file (default: [qa] prompt or "
                                                "prompts/qa.j2)."),
           endpoint: str | None = typer.Option(None, "--endpoint", help="Endpoint name (default: [qa] endpoint).")):
    """The VLM writes one question-answer pair per kept (image, task type)."""
    ws = open_ws(workspace)
    with session(engine, address):
        rep = run_qa(ws, dry_run=dry_run, budget_usd=budget, limit=limit, prompt=prompt, endpoint=endpoint,
                     refresh_failed=refresh_failed, batch=batch or None)
    typer.echo(task_type_counts(ws).line())
    raise typer.Exit(_show(rep, ws.config.limits.max_failure_rate))


@app.command("referee")
def referee_cmd(workspace: Path = WS_ARG, dry_run: bool = DRY, budget: float | None = BUDGET,
                limit: int | None = LIMIT, refresh_failed: bool = REFRESH, batch: bool = BATCH,
                engine: str = ENGINE, address: str | None = ADDRESS,
                name: list[str] | None = typer.Option(None, "--name", help="Only this referee (repeatable; "
                                                         "default: every [[referees]] entry)."),
                full: bool = typer.Option(False, "--full", help="Ask every referee about every sample (default: "
                                          "adaptive k-of-N, in [[referees]] order, stopping once a sample's "
                                          "outcome is decided; [referee] audit_fraction is always fully voted; "
                                          "[referee] adaptive = false makes --full the default).")):
    """The configured referees vote 1/0 on the Q&A samples (adaptively unless --full)."""
    ws = open_ws(workspace)
    adaptive = ws.config.referee.adaptive and not full

    def on_plan(ref, plan):
        typer.echo(f"referee {ref}: asked about {plan.asked + plan.already:,} sample(s) ({plan.already:,} already "
                   f"voted, {plan.audit:,} audit); {plan.decided:,} already decided by the other referees' votes"
                   + (" (a dry run cannot know the votes still to come: later referees' figures are upper bounds)"
                      if dry_run else ""))

    status = 0
    with session(engine, address):
        for rep in run_referees(ws, names=name or None, dry_run=dry_run, budget_usd=budget, limit=limit,
                                refresh_failed=refresh_failed, adaptive=adaptive, on_plan=on_plan,
                                batch=batch or None):
            status = max(status, _show(rep, ws.config.limits.max_failure_rate))
    _awaiting(ws)
    raise typer.Exit(status)


def _awaiting(ws) -> None:
    """Where proposals wait for review, say so: their samples are left out of votes, selection and export."""
    counts = task_type_counts(ws)
    if counts.awaiting and not counts.use_proposed:
        typer.echo(counts.line() + "; their samples are left out until then")


@app.command("select")
def select_cmd(workspace: Path = WS_ARG,
               min_votes: int | None = typer.Option(None, help="Positive votes needed (default: [select] "
                                                       "min_votes, 2)."),
               max_per_task: int | None = typer.Option(None, help="At most this many samples per task type."),
               min_per_task: int | None = typer.Option(None, help="Drop task types with fewer passing samples."),
               budget: int | None = typer.Option(None, "--total", help="Total samples to keep, spread over task "
                                                    "types (many tasks × few samples)."),
               seed: int | None = typer.Option(None, help="Seed for which samples a cap or budget keeps."),
               consensus: str = typer.Option("kofn", "--consensus", help="kofn: at least --min-votes positive "
                                             "votes; ds: Dawid-Skene posterior P(good) >= --min-posterior (each "
                                             "referee's reliability estimated from the votes)."),
               min_posterior: float | None = typer.Option(None, "--min-posterior", help="With --consensus ds: "
                                                             "the posterior P(good) a sample needs (default 0.8).")):
    """Keep samples the referees pass (k-of-N votes or Dawid-Skene posterior), with per-task caps/floors and a
    total budget. A reviewer's vote (`workbench adjudicate`) decides its sample; a flagged sample is never kept."""
    if consensus == "ds" and min_votes is not None:
        raise WorkbenchError("--min-votes applies to --consensus kofn; with --consensus ds use --min-posterior")
    if consensus != "ds" and min_posterior is not None:
        raise WorkbenchError("--min-posterior applies to --consensus ds; add --consensus ds (or use --min-votes)")
    ws = open_ws(workspace)
    k = ws.config.select.min_votes if min_votes is None else min_votes
    if consensus == "kofn" and ws.config.referees and k > len(ws.config.referees):
        typer.echo(f"warning: --min-votes {k} is more than the {len(ws.config.referees)} configured referee(s): "
                   "no sample can pass", err=True)
    typer.echo(select(ws, min_votes=min_votes, max_per_task=max_per_task, min_per_task=min_per_task,
                      budget=budget, seed=seed, consensus=consensus,
                      min_posterior=0.8 if min_posterior is None else min_posterior).summary())
    _awaiting(ws)


@app.command("export")
def export_cmd(workspace: Path = WS_ARG,
               format: str = typer.Option("llava", "--format", "-f", help="llava (JSON array), sharegpt or parquet."),
               out: Path | None = typer.Option(None, "--out", "-o", help="Output file (default: "
                                                  "WORKSPACE/exports/llava.json, sharegpt.json or samples.parquet)."),
               image_root: Path | None = typer.Option(None, "--image-root", help="Write image paths relative to "
                                                         "this folder (default: as registered)."),
               all_ok: bool = typer.Option(False, "--all-ok", help="Export every parsed sample, not only the "
                                           "selected ones."),
               allow_changed: bool = typer.Option(False, "--allow-changed", help="Export the last selection even "
                                                  "though people's votes or flags, or referees' votes, changed "
                                                  "since (a warning).")):
    """Export the selected samples for training (same inputs give byte-identical files)."""
    ws = open_ws(workspace)
    typer.echo(ExportStage(out, fmt=format, image_root=image_root, only_selected=not all_ok,
                           allow_changed=allow_changed).run(ws).summary())
    _awaiting(ws)


@app.command("funnel")
def funnel_cmd(workspace: Path = WS_ARG,
               per_task: bool = typer.Option(False, "--per-task", help="One row per task type.")):
    """How many (image, task type) pairs and samples survive each stage."""
    ws = open_ws(workspace)
    typer.echo(funnel(ws, per_task=per_task).to_string(index=False))


@app.command("rejections")
def rejections_cmd(workspace: Path = WS_ARG,
                   stage: str | None = typer.Option(None, help="filter, qa, referee or select (default: all)."),
                   out: Path | None = typer.Option(None, "--out", "-o", help="Write CSV here instead of printing.")):
    """Every row a stage dropped, with its reason."""
    if stage not in (None, "filter", "qa", "referee", "select"):
        raise WorkbenchError(f"--stage must be filter, qa, referee or select; got {stage!r}")
    ws = open_ws(workspace)
    df = rejections(ws, stage)
    if out:
        df.to_csv(out, index=False)
        typer.echo(f"wrote {len(df)} rows to {out}")
    else:
        typer.echo(df.to_string(index=False, max_colwidth=60) if len(df) else "no rejected rows")
