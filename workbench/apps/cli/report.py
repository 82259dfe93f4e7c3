"""How the CLI reports an LLM stage's run, and its exit status (shared by expand and the vision stages)."""

from __future__ import annotations

import typer


def show_run(report, max_failure_rate: float) -> int:
    """Print a run's summary; the exit status is 1 when it stopped early, too many rows failed, or the stage
    produced nothing from replies that did parse (e.g. the filter kept none of the candidates)."""
    typer.echo(report.summary())
    for e in report.errors[:3]:
        typer.echo(f"  e.g. {e}", err=True)
    if report.dry_run:
        return 0
    show_failing(report)
    failed = report.call_failed + report.parse_failed
    done = report.ok + failed
    if report.stopped:
        typer.echo(f"error: {report.stage} stopped early: {report.stopped}", err=True)
        return 1
    if done and failed / done > max_failure_rate:
        typer.echo(f"error: {report.stage}: {failed} of {done} row(s) failed ({report.call_failed} call, "
                   f"{report.parse_failed} parse), over limits.max_failure_rate {max_failure_rate:.0%}; see "
                   "`workbench rejections` and the llm_calls table, fix the endpoint or prompt, then run again "
                   "(--refresh-failed asks again for replies that could not be read)", err=True)
        return 1
    if report.produces and report.ok and not report.counts.get(report.produces):
        typer.echo(f"error: {report.stage}: {report.ok} repl(ies) read, but {report.produces.replace('_', ' ')} = 0: "
                   f"nothing for the next stage. Look at `workbench rejections WORKSPACE --stage {report.stage}`, "
                   "then the prompt or the model", err=True)
        return 1
    return 0


def show_failing(report) -> None:
    """Name the rows whose calls failed in this run (marking those that failed in an earlier run too), with an
    excerpt of the raw reply and how to look at them and ask again."""
    failing = getattr(report, "failing", None) or []
    if not failing:
        return
    again = sum(f["again"] for f in failing)
    typer.echo(f"{report.failed_rows} row(s) failed in this run's calls ({report.failed_again} of them failed in "
               f"an earlier run too, asked last and not counted towards the failure-rate stop):", err=True)
    for f in failing:
        typer.echo(f"  {'failed again' if f['again'] else 'failed'}: {f['row']} (key {f['key'][:12]}): {f['error']}"
                   f"; reply: {f['reply']!r}", err=True)
    if report.failed_rows > len(failing):
        typer.echo(f"  ... and {report.failed_rows - len(failing)} more ({again} of the {len(failing)} shown failed "
                   "before)", err=True)
    typer.echo("  a failed call is asked again on every run, after the new ones; a reply that was read but not "
               "parsed only with --refresh-failed. The raw reply: sqlite3 WORKSPACE/workbench.sqlite "
               "\"SELECT status, error, raw_text FROM llm_calls WHERE key LIKE 'KEY%'\"", err=True)
