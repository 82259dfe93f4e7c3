"""The notebooks' prompt-trial loop (01 for expansion prompts, 03 for filter, Q&A and referee prompts), on the
trial library (`analysis/trials/`), with the rules that make Run All safe:

    print(workspace_state(ws))                       # prompts in use, pending proposals, stored trials
    res = trial(ws, "qa", {"edited": text}, items, budget_usd=BUDGET_USD)   # current + the edits, or a dry run
    res                                              # verdict, summary, matrix (with thumbnails), metrics
    print(promote_winner(ws, res, WINNER))           # WINNER None: nothing promoted (Run All never promotes)
    print(spend_gate(dry_report, BUDGET_USD) or "go")   # None when a real run may follow its dry run

BUDGET_USD <= 0 (the default) means dry runs only: nothing is called, not even a free local endpoint, so Run All
never spends. A version whose text is the prompt in use is not run again (it is the `current` column). A trial with
any failed (or budget-skipped) call shows its errors and declares no winner, and `promote_winner` refuses it; an
unreadable reply is marked in its cell and counted per version, the prompt's own result.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field

from workbench.analysis.trials import (
    TestSet,
    Trial,
    Version,
    candidates,
    current_prompt,
    promote,
    run_trial,
    uses_now,
)
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.review.decisions import pending_proposals
from workbench.stages.base import RunReport
from workbench.stages.vision import image_data_url
from workbench.taxonomy.model import task_type_counts

WIDGET_NOTE = ("<div style='color:#666;font-size:90%'>{what}: a live widget of the running kernel, not saved with "
               "the notebook. If it shows <i>Error displaying widget: model not found</i> (a reopened notebook), "
               "re-run this cell.</div>")


def widget_note(what: str):
    """An HTML output saved with the cell that says how to get a widget back in a reopened notebook (JupyterLab
    shows its own 'model not found' error there and no text fallback of the widget itself)."""
    from IPython.display import HTML

    return HTML(WIDGET_NOTE.format(what=html.escape(what)))


def show_widget(widget, what: str) -> None:
    """Display the note, then the widget, as two outputs of the cell."""
    from IPython.display import display

    display(widget_note(what))
    display(widget)


def workspace_state(ws: Workspace) -> str:
    """What the workspace holds now, for a notebook's first cell: the template every stage uses, the pending
    proposals (all of them, whatever run made them) and the stored trials."""
    pending = len(pending_proposals(ws))
    trials = ws.store.scalar("SELECT count(*) FROM trials") or 0
    lines = [f"workspace {ws.root.resolve()}", f"  {task_type_counts(ws).line()}",
             f"  pending proposals: {pending}" + (" (review them in notebook 01 before they are used)" if pending
                                                  else ""),
             f"  stored prompt trials: {trials}", "  prompts in use:"]
    lines += [f"    {line}" for line in uses_now(ws)]
    return "\n".join(lines)


def spend_gate(report, budget_usd: float | None) -> str | None:
    """None when the real run that follows this dry run may go ahead, else why not (one line). Nothing to call
    (all cached) always may; otherwise only with a positive budget that covers a known estimate. `report`: a
    dry run's RunReport (or a report holding one as `.run`, as expand's does)."""
    report = report.run if isinstance(getattr(report, "run", None), RunReport) else report
    if report.to_call == 0:
        return None
    if not budget_usd or budget_usd <= 0:
        return (f"dry run only: {report.to_call} call(s) to make and BUDGET_USD = {budget_usd or 0}; set BUDGET_USD "
                "in the parameters cell to the most you will spend, then re-run this cell")
    if report.est_cost_usd is None:
        return (f"not run: the cost of {report.to_call} call(s) to {report.model or report.endpoint} is unknown "
                "(no price for this model); set the endpoint's price in workbench.toml, or run it from the CLI")
    if report.est_cost_usd > budget_usd:
        return (f"not run: the estimate (USD {report.est_cost_usd:.4f} for {report.to_call} call(s)) is over "
                f"BUDGET_USD = {budget_usd}; raise it or try fewer items")
    return None


def run_within_budget(ws: Workspace, run, what: str, budget_usd: float | None, **kw):
    """`run(ws, dry_run=True, **kw)` (one report or a list, as run_referees returns), printed; then the real run
    (budget_usd as its stop) only when `spend_gate` allows every report. Returns the real report(s) or None."""
    try:
        dry = run(ws, dry_run=True, **kw)
    except WorkbenchError as exc:         # nothing to run yet (e.g. Q&A before any filter decision): say why
        print(f"{what} not run: {exc}")
        return None
    for r in dry if isinstance(dry, list) else [dry]:
        print(r.summary())
        why_not = spend_gate(r, budget_usd)
        if why_not:
            print(f"{what} not run: {why_not}")
            return None
    return run(ws, budget_usd=budget_usd if budget_usd and budget_usd > 0 else None, **kw)


def trial_items(ws: Workspace, stage: str, image_ids: list[str]) -> list[str]:
    """The items of a trial of `stage` on the chosen images: the images themselves (filter, Q&A: those the stage
    has rows for) or their Q&A samples (referees). [] when the stage has nothing for them yet."""
    chosen = set(image_ids)
    try:
        keys = candidates(ws, stage)
    except WorkbenchError:
        return []
    if stage.startswith("referee"):
        mine = {r[0] for r in ws.store.query("SELECT id FROM samples WHERE image_id IN (SELECT value FROM "
                                             "json_each(?))", (json.dumps(sorted(chosen)),))}
        return [k for k in keys if k in mine]
    return [k for k in keys if k in chosen]


@dataclass
class TrialResult:
    """What a notebook's trial cell shows: the trial (or its dry run), the verdict, the versions left out."""

    stage: str
    trial: Trial | None
    verdict: str
    ok: bool = False                                    # every call answered: a winner may be chosen
    skipped: list[str] = field(default_factory=list)    # versions not run, and why
    ws: Workspace | None = field(default=None, repr=False)

    def summary(self) -> str:
        lines = [*self.skipped, self.verdict]
        if self.trial is not None:
            lines.insert(0, self.trial.summary())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _thumbs(self, matrix) -> list[str]:
        out = []
        for image_id in matrix["image_id"]:
            try:
                url = image_data_url(self.ws, image_id) if image_id and self.ws is not None else None
            except (WorkbenchError, OSError):
                url = None
            out.append(f"<img src='{url}' style='max-width:120px;max-height:100px'>" if url else "")
        return out

    def _repr_html_(self) -> str:
        color = "#070" if self.ok else "#b00"
        head = "".join(f"<div>{html.escape(s)}</div>" for s in self.skipped)
        head += f"<p style='color:{color};font-weight:bold'>{html.escape(self.verdict)}</p>"
        if self.trial is None:
            return head
        head += f"<pre>{html.escape(self.trial.summary())}</pre>"
        m = self.trial.matrix()
        if m["image_id"].notna().any():
            m.insert(0, "image", self._thumbs(m))
        m = m.drop(columns=["image_id"])
        body = m.map(lambda v: v if isinstance(v, str) and v.startswith("<img") else
                     html.escape("" if v is None else str(v)).replace("\n", "<br>"))
        table = body.to_html(escape=False, index=False).replace("<td>", '<td style="text-align:left">')
        metrics = self.trial.metrics(self.ws).to_html()
        return head + table + "<h4>Per version</h4>" + metrics


def _versions(ws: Workspace, stage: str, edits: dict[str, str]) -> tuple[list[Version], list[str]]:
    cur = current_prompt(ws, stage)
    versions = [Version(cur, f"current ({cur.path.name})")]
    seen, skipped = {cur.hash: versions[0].name}, []
    for name, text in edits.items():
        v = Version.of_text(text, name, like=cur)
        if v.hash in seen:
            skipped.append(f"{name}: the same text as {seen[v.hash]} ({v.hash[:8]}), not run again")
            continue
        seen[v.hash] = name
        versions.append(v)
    return versions, skipped


def trial(ws: Workspace, stage: str, edits: dict[str, str], items: list[str], *, budget_usd: float | None = 0,
          assertions: list[str] | None = None, endpoint=None) -> TrialResult:
    """The prompt in use against each edited text (`edits`: name -> template text) on `items`. A dry run first;
    the real trial only when `spend_gate` allows it (within `budget_usd`), the trial's own budget."""
    versions, skipped = _versions(ws, stage, edits)
    if len(versions) == 1:
        return TrialResult(stage, None, "nothing to compare: every edited version is the prompt in use; edit it "
                           "and re-run this cell", skipped=skipped, ws=ws)
    if not items:
        return TrialResult(stage, None, f"nothing to try the prompts on: no {stage} items in this workspace yet",
                           skipped=skipped, ws=ws)
    ts = TestSet.of(ws, stage, items, assertions=assertions)
    dry = run_trial(ws, stage, versions, ts, dry_run=True, endpoint=endpoint)
    total = RunReport(stage=stage, endpoint=next(iter(dry.reports.values())).endpoint,
                      model=next(iter(dry.reports.values())).model)
    total.to_call = sum(r.to_call for r in dry.reports.values())
    costs = [r.est_cost_usd for r in dry.reports.values()]
    total.est_cost_usd = None if any(c is None for c in costs) else sum(costs)
    why_not = spend_gate(total, budget_usd)
    if why_not:
        return TrialResult(stage, dry, why_not + "; no winner (nothing was compared)", skipped=skipped, ws=ws)
    t = run_trial(ws, stage, versions, ts, budget_usd=budget_usd if budget_usd and budget_usd > 0 else None,
                  endpoint=endpoint)
    # A failed or skipped call leaves a version unjudged: no winner. An unreadable reply is the prompt's own
    # result (marked in its cell and counted per version), so it does not block choosing.
    bad = t.outputs[t.outputs.status.isin(["call_failed", "not_run"])]
    if len(bad) or t.failed:
        errors = "; ".join(t.errors[:3]) or "no reason recorded"
        verdict = (f"no winner: {len(bad)} of {len(t.outputs)} call(s) failed or were not made (trial {t.id}, "
                   f"{t.status}): {errors}")
        return TrialResult(stage, t, verdict, skipped=skipped, ws=ws)
    unread = int((t.outputs.status == "parse_failed").sum())
    names = ", ".join(repr(v["name"]) for v in t.versions[1:])
    note = f" ({unread} reply(ies) could not be read: marked ⚠ below)" if unread else ""
    return TrialResult(stage, t, f"every call answered (trial {t.id}){note}: compare the versions, then set WINNER "
                       f"to one of {names} and run the promote cell", ok=True, skipped=skipped, ws=ws)


def promote_winner(ws: Workspace, result: TrialResult | None, winner: str | None) -> str:
    """Promote the version named `winner` of the trial shown, only when that trial answered every call."""
    if winner is None:
        return ("nothing promoted (Run All never promotes): set WINNER to a version's name from the trial above "
                "and run this cell.\nTemplates in use:\n" + "\n".join(f"  {line}" for line in uses_now(ws)))
    if result is None or result.trial is None or result.trial.id is None:
        return f"not promoted: {winner!r} was not compared in a trial that ran (see the trial cell's verdict)"
    if not result.ok:
        return f"not promoted: the trial declared no winner ({result.verdict})"
    hashes = {v["name"]: v["hash"] for v in result.trial.versions}
    if winner not in hashes:
        return f"not promoted: no version {winner!r} in trial {result.trial.id}; its versions: {', '.join(hashes)}"
    return promote(ws, result.stage, hashes[winner])
