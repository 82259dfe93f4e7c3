"""CLI: `workbench expand`, `workbench taxonomy duplicates`, `workbench taxonomy coverage`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from workbench.analysis.duplicates import apply_merge, suggest_merges
from workbench.analysis.reference_coverage import DEFAULT_BAND, DEFAULT_THRESHOLD, reference_coverage
from workbench.apps.cli.app import WS_ARG, app, open_ws, taxonomy_app
from workbench.apps.cli.report import show_run
from workbench.core.errors import WorkbenchError
from workbench.core.resources import bundled_reference_names, reference_file
from workbench.stages.expand.stage import expand


@app.command("expand")
def expand_cmd(
    workspace: Path = WS_ARG,
    level: int | None = typer.Option(None, "--level", "-l", min=1,
                                        help="Generate nodes of this level: children of every accepted node of "
                                        "level N-1 (--level 1 supplements the first level)."),
    node: list[str] | None = typer.Option(None, "--node", "-n",
                                             help="Expand these nodes (id or `~` path); repeat for several."),
    prompt: Path | None = typer.Option(None, "--prompt", "-p",
                                          help="A Jinja2 prompt file used for every parent (default: the three "
                                          "prompts configured in [expand], or the bundled ones)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print calls, estimated tokens and cost; call nothing."),
    budget: float | None = typer.Option(None, "--budget", min=0,
                                           help="Stop cleanly once this many USD are spent (default: "
                                           "limits.budget_usd)."),
    endpoint: str | None = typer.Option(None, "--endpoint", "-e",
                                           help="Endpoint name from workbench.toml (default: expand.endpoint)."),
    model: str | None = typer.Option(None, "--model", help="Override the endpoint's model."),
    base_url: str | None = typer.Option(None, "--base-url", help="Override the endpoint's base URL."),
    again: bool = typer.Option(False, "--again", help="Ask again for parents already expanded with the current "
                               "version of their template and model (the prompt then lists their current "
                               "children)."),
    record_only: bool = typer.Option(False, "--record-only", help="Record the proposals without adding nodes "
                                     "(for comparing prompts)."),
    refresh_failed: bool = typer.Option(False, "--refresh-failed", help="Ask again for parents whose stored "
                                        "reply could not be read (otherwise answered calls come from the cache)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    batch: bool = typer.Option(False, "--batch", help="Send the calls through the OpenAI Batch API (about half "
                               "price, results within [batch] completion_window); run the same command again to "
                               "resume polling after a stop. `workbench batches` lists them."),
):
    """Ask the LLM for new task types, one call per parent; new names become `proposed` nodes.

    The endpoint comes from workbench.toml; with none configured, OPENAI_BASE_URL and
    OPENAI_API_KEY are used exactly as the openai client does. Answers are cached in the
    workspace: an interrupted run continues where it stopped.
    """
    ws = open_ws(workspace)
    if batch:
        ws.config.batch.enabled = True   # this run only: the stage loop reads it (expand() passes no batch option)
    report = expand(ws, level=level, nodes=node or None, prompt=prompt, endpoint=endpoint, model=model,
                    base_url=base_url, dry_run=dry_run, budget_usd=budget, apply=not record_only, again=again,
                    progress=progress, refresh_failed=refresh_failed)
    typer.echo(report.summary().split("\n")[0])
    status = show_run(report.run, ws.config.limits.max_failure_rate)
    for gone in report.gone:
        typer.echo(f"  skipped: {gone}", err=True)
    if report.run.stopped:
        typer.echo("run the same command again to continue", err=True)
    raise typer.Exit(status)


@taxonomy_app.command("duplicates")
def duplicates_cmd(
    workspace: Path = WS_ARG,
    scope: str = typer.Option("siblings", help="siblings (children of one parent) or tree (any two nodes)."),
    threshold: float | None = typer.Option(None, help="Cosine similarity at or above which names are "
                                              "near-duplicates (default: text_embedding.duplicate_threshold)."),
    no_embed: bool = typer.Option(False, "--exact-only", help="Only exact matches (no embedding model)."),
    apply: bool = typer.Option(False, "--apply", help="Merge every suggestion (second into first)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """List near-duplicate task names as merge suggestions (exact after normalisation, or by embeddings)."""
    ws = open_ws(workspace)
    sugg = suggest_merges(ws, scope=scope, threshold=threshold, embed=not no_embed)
    if as_json:
        typer.echo(json.dumps([s.__dict__ for s in sugg], indent=1))
    else:
        for s in sugg:
            typer.echo(f"{s.kind:9} {s.score:.3f}  {s.b_id} {s.b_path!r}  ->  {s.a_id} {s.a_path!r}")
        typer.echo(f"{len(sugg)} merge suggestion(s)" + ("" if apply or not sugg else
                                                         "; merge one with `workbench taxonomy merge WS VICTIM "
                                                         "SURVIVOR` or all with --apply"))
    if apply:
        merged = 0
        for s in sugg:
            try:
                apply_merge(ws, s)
                merged += 1
            except WorkbenchError as exc:  # an earlier merge may have removed one side
                typer.echo(f"skipped {s.b_id} -> {s.a_id}: {exc}", err=True)
        typer.echo(f"merged {merged} pair(s)")


@taxonomy_app.command("coverage")
def coverage_cmd(
    workspace: Path = WS_ARG,
    reference: str = typer.Argument(..., help="A reference taxonomy: tasktype.txt, JSON or folder tree, or a "
                                    "bundled list's name (" + ", ".join(bundled_reference_names()) + "; a unique "
                                    "prefix will do).", show_default=False, metavar="REFERENCE"),
    format: str | None = typer.Option(None, "--format", "-f", help="txt, folder or json (default: detected)."),
    threshold: float | None = typer.Option(None, help="Score below which a reference task is a gap (default: "
                                              "text_embedding.coverage_threshold when set, else the matcher's "
                                              f"tuned {DEFAULT_THRESHOLD}; the score is a probability)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="Candidate task types kept per reference task."),
    gaps_only: bool = typer.Option(False, "--gaps", help="List only the gaps."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    confirm: bool = typer.Option(False, "--confirm", help="Let an LLM decide reference tasks whose score lies in "
                                 "the uncertain band (one cached call per candidate pair)."),
    endpoint: str | None = typer.Option(None, "--endpoint", "-e", help="Endpoint name from workbench.toml for "
                                           "--confirm (default: default)."),
    band: tuple[float, float] | None = typer.Option(None, "--band", help="LOW HIGH: the uncertain band "
                                                       "(--confirm only; default: the tuned 0.05 0.90)."),
    prompt: Path | None = typer.Option(None, "--prompt", "-p", help="Prompt file for --confirm (default: "
                                          "the bundled coverage_confirm.j2)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --confirm: print calls, tokens and cost; call "
                                 "nothing."),
    budget: float | None = typer.Option(None, "--budget", min=0, help="With --confirm: stop once this many "
                                           "USD are spent (default: limits.budget_usd)."),
):
    """Map each reference task to its best and runner-up task types; list the gaps, grouped by the reference's
    first level and by ours, and our first-level areas the reference never tests."""
    ws = open_ws(workspace)
    if (endpoint or dry_run or prompt or budget is not None) and not confirm:
        raise WorkbenchError("--endpoint, --prompt, --dry-run and --budget apply to --confirm; add --confirm")
    rep = reference_coverage(ws, reference_file(reference), fmt=format, threshold=threshold, top_k=top_k,
                             confirm=(endpoint or "default") if confirm else None, band=band or DEFAULT_BAND,
                             prompt=prompt,
                             dry_run=dry_run, budget_usd=budget)
    run = rep.confirm_run
    if run is not None:
        typer.echo(run.summary(), err=not dry_run)
        if dry_run:
            return
    rows = rep.gaps if gaps_only else rep.rows
    if as_json:
        out = rep.to_json(rows)
        if run is not None:
            out["confirm_run"] = run.as_dict()
        typer.echo(json.dumps(out, indent=1))
    else:
        _print_rows(rep, rows)
    typer.echo(rep.quality_line(), err=as_json)
    if run is not None:
        _confirm_status(run, ws.config.limits.max_failure_rate)


def _print_rows(rep, rows) -> None:
    for r in rows:
        mark = "ok " if r.covered else "GAP"
        via = " (llm)" if r.decided_by == "llm" else ""
        shown = r.match_path if r.covered and r.match_path else r.nearest_path
        runner = f"   [2nd {r.runner_up_score:.3f} {r.runner_up_path}]" if r.runner_up_path else ""
        typer.echo(f"{mark} {r.score:.3f} {r.confidence:6s}  {r.reference_path}  ->  {shown or '-'}{via}{runner}")
    if rep.gaps:
        typer.echo("gaps by reference category: " + "; ".join(
            f"{k}: {len(v)}" for k, v in sorted(rep.gaps_by_reference().items())))
        typer.echo("gaps by our nearest area: " + "; ".join(
            f"{k}: {len(v)}" for k, v in sorted(rep.gaps_by_ours().items())))
    untested = rep.untested_areas()
    if untested:
        typer.echo(f"our areas the reference never tests ({len(untested)}): " + ", ".join(untested))
    typer.echo(rep.summary())


def _confirm_status(run, max_failure_rate: float) -> None:
    """Exit 1, with the reason, when the LLM confirmation stopped or too many of its replies failed: the rows
    printed above then keep the embedding's decision where no answer came."""
    failed = run.call_failed + run.parse_failed
    done = run.ok + failed
    if run.stopped:
        reason = f"stopped early: {run.stopped}"
    elif done and failed / done > max_failure_rate:
        reason = f"{failed} of {done} repl(ies) failed ({run.call_failed} call, {run.parse_failed} unreadable)"
    else:
        return
    typer.echo(f"error: coverage --confirm {reason}; rows without an answer keep the embedding's decision. Fix "
               "the endpoint or prompt and run again (answered pairs come from the cache)", err=True)
    raise typer.Exit(1)
