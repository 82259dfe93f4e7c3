"""CLI: `workbench adjudicate` — a person's votes and flags on Q&A samples, and the queue of the samples the
referees' Dawid–Skene consensus is least sure about."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.apps.cli.app import WS_ARG, app, open_ws
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.review import adjudication as adj
from workbench.stages.select.consensus import consensus_key, require, stored_path, uncertain_queue


def _vote_value(text: str) -> int:
    if text.strip() not in ("0", "1"):
        raise WorkbenchError(f"--vote SAMPLE VALUE: VALUE must be 1 (good) or 0 (bad); got {text!r}")
    return int(text)


@app.command("adjudicate")
def adjudicate_cmd(
    workspace: Path = WS_ARG,
    queue: int | None = typer.Option(None, "--queue", min=0, metavar="N",
                                        help="Show the N samples whose consensus P(good) is closest to 0.5 that no "
                                        "person has voted on or flagged (the default action, N=20)."),
    vote: tuple[str, str] | None = typer.Option(None, "--vote", metavar="SAMPLE 1|0",
                                                   help="Record your vote on a sample (an id or a unique prefix of "
                                                   "at least 4 characters); it replaces your earlier vote."),
    flag: str | None = typer.Option(None, "--flag", metavar="SAMPLE",
                                       help="Flag a sample (needs --reason): it is never selected nor exported."),
    unflag: str | None = typer.Option(None, "--unflag", metavar="SAMPLE", help="Lift a sample's flag."),
    reason: str | None = typer.Option(None, "--reason", help="Why (required with --flag; kept with --vote)."),
    reviewer: str | None = typer.Option(None, "--reviewer", help="Your name; votes are stored as referee "
                                           "human:NAME (default: the OS user)."),
    exclude_human: bool = typer.Option(False, "--exclude-human", help="Compute the consensus from the machine "
                                       "referees only (default: people's votes are the true label of their "
                                       "samples)."),
):
    """Vote on or flag samples by hand, and list the samples a person should decide first."""
    if reason is not None and flag is None and vote is None:
        raise WorkbenchError("--reason goes with --flag SAMPLE or --vote SAMPLE 1|0")
    ws = open_ws(workspace)
    acted = False
    if vote is not None:
        sample, value = vote
        referee = adj.vote(ws, sample, _vote_value(value), reviewer, reason if flag is None else None)
        typer.echo(f"{referee} voted {value} on sample {adj.resolve_sample(ws, sample)[0]}")
        acted = True
    if flag is not None:
        if not reason:
            raise WorkbenchError("--flag SAMPLE needs --reason TEXT: say what is wrong with the sample")
        sid = adj.flag(ws, flag, reason, reviewer)
        typer.echo(f"flagged sample {sid}: {reason.strip()} (never selected nor exported while flagged)")
        acted = True
    if unflag is not None:
        sid = adj.resolve_sample(ws, unflag)[0]
        typer.echo(f"lifted the flag on sample {sid}" if adj.unflag(ws, sid) else f"sample {sid} was not flagged")
        acted = True
    if queue is None and acted:
        return
    _show_queue(ws, 20 if queue is None else queue, include_human=not exclude_human)


def _show_queue(ws: Workspace, n: int, *, include_human: bool) -> None:
    if stored_path(ws, consensus_key(ws.store, include_human), include_human) is None:
        n_votes = ws.store.scalar("SELECT count(*) FROM votes")
        typer.echo(f"fitting Dawid-Skene to {n_votes:,} votes (about 10 s per 100k; stored for the next time)…",
                   err=True)
    cons = require(ws, include_human)
    rel = cons.reliability
    typer.echo(f"Dawid-Skene over {len(cons.posterior):,} sample(s): prior P(good) {cons.prior:.3f}; "
               f"{cons.gold} decided by a person" + ("" if include_human else " (people's votes left out)"))
    for r in rel.itertuples(index=False):
        typer.echo(f"  {r.referee}: sensitivity {r.sensitivity:.3f}, specificity {r.specificity:.3f}, "
                   f"accuracy {r.accuracy:.3f} over {r.votes:,} vote(s)")
    q = uncertain_queue(ws, cons, n)
    if q.empty:
        typer.echo("no undecided sample to adjudicate")
        return
    typer.echo(f"{len(q)} most uncertain sample(s), decide these first (`--vote SAMPLE 1|0`):")
    for r in q.itertuples(index=False):
        typer.echo(f"{r.sample_id}  P(good)={r.p_good:.3f}  {r.votes}\n    task: {r.task_type}\n"
                   f"    Q: {_short(r.question)}\n    A: {_short(r.answer)}")


def _short(text, n: int = 160) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[:n - 1] + "…"
