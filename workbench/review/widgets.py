"""The review table for notebooks (ipywidgets, imported when a table is built).

    table = ReviewTable(ws)                 # every pending proposal; filters for stage run and prompt hash
    display(table.widget())
    table.rows[0].action.value = "accept"   # what a curator's clicks do, scriptable and testable headless
    table.rows[1].new_name.value = "Chart reading"   # typing a name turns a 'keep' row into 'rename'
    results = table.apply()                 # or table.apply_button.click()

Apply writes the decisions of the rows shown (through `decisions.apply_decisions`), lists each row's result and
a count per outcome, then re-reads the pending proposals from the workspace: decided rows leave the table, rows
that failed keep their choice and show why.

Run All in a notebook does not wait for a click: the cell after the table calls `table.require_apply()`, which
stops the run with one short line (`ReviewPending`) while proposals are shown and Apply was not pressed in this
session; after Apply the user runs the cells below. Widget state is not saved with the notebook (a saved copy
would look clickable but write nothing): a reopened notebook shows "model not found" until the cell is re-run,
and the plain-text form of the table says so.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.review.decisions import (
    ACTIONS,
    Decision,
    DecisionResult,
    apply_decisions,
    count_outcomes,
    pending_proposals,
)

ALL = "all"            # filter value: no filter
NO_RUN = "none"        # run filter value: proposals made by no stage run (added by hand)


def _widgets():
    try:
        import ipywidgets
    except ImportError as exc:   # pragma: no cover - ipywidgets is a dependency of the notebooks
        raise WorkbenchError("the review table needs ipywidgets: pip install ipywidgets") from exc
    return ipywidgets


class ReviewPending(WorkbenchError):
    """Raised by `ReviewTable.require_apply` to stop Run All politely until the curator pressed Apply."""

    def _render_traceback_(self):
        # IPython shows these lines instead of a traceback: one short message, and Run All stops here.
        return [f"\x1b[1mStopped for review:\x1b[0m {self}"]


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


@dataclass
class ReviewRow:
    """One proposed node's widgets: `action` (Dropdown over ACTIONS), `new_name` (Text), `label`, `message`."""

    node_id: str
    action: Any
    new_name: Any
    label: Any
    message: Any
    box: Any

    def decision(self) -> Decision:
        # expect: the row showed a proposal; a decision someone else made since is not overridden.
        return Decision(self.node_id, self.action.value, self.new_name.value or None, expect="proposed")

    def reset(self) -> None:
        self.action.value = "keep"
        self.new_name.value = ""
        self.message.value = ""


class ReviewTable:
    """Accept / reject / rename pending proposals and apply the decisions to the workspace.

    `df`: a `pending_proposals` frame (or any frame with a `node_id` column) limiting the table to those nodes;
    None: every pending proposal (under `parent` when given). `stage_run_id` / `prompt_hash` set the filters'
    starting values. At most `max_rows` rows are shown; narrow the filters to see the rest.
    """

    def __init__(self, ws: Workspace, df=None, *, stage_run_id: int | None = None, prompt_hash: str | None = None,
                 parent: str | None = None, max_rows: int = 200):
        W = _widgets()
        self._W = W
        self.ws = ws
        self.parent = parent
        self.max_rows = max_rows
        self._only = None if df is None else set(df["node_id"])
        self.rows: list[ReviewRow] = []            # the rows shown, in table order
        self._row_cache: dict[str, ReviewRow] = {}  # every row built (a filter change keeps their choices)
        self.results: list[DecisionResult] = []     # the last Apply's results
        self.history: list[DecisionResult] = []     # every Apply's results in this session
        self.error: str | None = None               # an unexpected error from the last button click

        self.run_filter = W.Dropdown(description="stage run", options=[("all runs", ALL)], value=ALL,
                                     layout=W.Layout(width="360px"))
        self.hash_filter = W.Dropdown(description="prompt", options=[("all prompts", ALL)], value=ALL,
                                      layout=W.Layout(width="360px"))
        self.summary = W.HTML()
        self.rows_box = W.VBox()
        self.apply_button = W.Button(description="Apply", button_style="primary",
                                     tooltip="write the decisions of the rows shown to the workspace")
        self.result_html = W.HTML()
        self._container = W.VBox([W.HBox([self.run_filter, self.hash_filter]), self.summary, self.rows_box,
                                  self.apply_button, self.result_html])
        self._rendering = False
        self.refresh()
        self.set_filter(stage_run_id=stage_run_id, prompt_hash=prompt_hash)
        self.run_filter.observe(self._on_filter, names="value")
        self.hash_filter.observe(self._on_filter, names="value")
        self.apply_button.on_click(self._on_click)

    # -- display ------------------------------------------------------------------------------
    def widget(self):
        return self._container

    def _repr_mimebundle_(self, **kwargs):
        bundle = self._container._repr_mimebundle_(**kwargs)
        # What a front end without the live kernel shows (nbconvert, a viewer): say how to get the table back.
        bundle["text/plain"] = (f"Review table ({len(self.pending)} pending proposal(s)): a live widget of the "
                                "running kernel, not saved with the notebook; re-run this cell to show it.")
        return bundle

    def require_apply(self) -> None:
        """Stop (ReviewPending) while any proposal is pending and Apply was not pressed in this session."""
        # Every pending proposal counts, not only the rows the filters show: a filter on a run that proposed
        # nothing must not wave Run All through while earlier runs' proposals wait.
        if len(self.pending) and not self.history:
            shown = "" if len(self.rows) == len(self.pending) else (
                f" ({len(self.rows)} shown with the filters; choose 'all runs' and 'all prompts' to see them all)")
            raise ReviewPending(
                f"{len(self.pending)} proposal(s) wait in the review table above{shown}. Choose accept / reject / "
                "rename, press Apply (leaving every row on keep is a choice too), then run this cell and the ones "
                "below (Run > Run Selected Cell and All Below).")

    # -- data ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the pending proposals from the workspace and redraw (filter choices are kept)."""
        df = pending_proposals(self.ws, parent=self.parent)
        if self._only is not None:
            df = df[df.node_id.isin(self._only)].reset_index(drop=True)
        self.pending = df
        gone = set(self._row_cache) - set(df.node_id)
        for nid in gone:
            del self._row_cache[nid]
        self._set_filter_options()
        self._render()

    def set_filter(self, *, stage_run_id: int | str | None = None, prompt_hash: str | None = None) -> None:
        """Show only one stage run's / one prompt's proposals (None: all). An unknown value shows no rows."""
        self._rendering = True
        try:
            self.run_filter.value = self._ensure_option(self.run_filter, ALL if stage_run_id is None
                                                        else stage_run_id)
            self.hash_filter.value = self._ensure_option(self.hash_filter, ALL if prompt_hash is None
                                                         else prompt_hash)
        finally:
            self._rendering = False
        self._render()

    @staticmethod
    def _ensure_option(dropdown, value):
        values = [v for _, v in dropdown.options]
        if value not in values:
            if isinstance(value, str) and value not in (ALL, NO_RUN):
                # A prompt-hash prefix picks the hash it starts (when just one does).
                hits = [v for v in values if isinstance(v, str) and v not in (ALL, NO_RUN) and v.startswith(value)]
                if len(hits) == 1:
                    return hits[0]
            dropdown.options = list(dropdown.options) + [(f"{value} (no pending proposals)", value)]
        return value

    def _set_filter_options(self) -> None:
        df = self.pending
        runs = []
        for rid, grp in df.groupby(df.stage_run_id.astype("object").where(df.stage_run_id.notna(), NO_RUN),
                                   sort=False):
            first = grp.iloc[0]
            label = ("no stage run" if rid == NO_RUN
                     else f"run {rid} · {first.stage or '?'} · {str(first.created_at)[:16]}")
            runs.append((f"{label} ({len(grp)})", rid if rid == NO_RUN else int(rid)))
        hashes = []
        for h, grp in df.groupby(df.prompt_hash.fillna(NO_RUN), sort=False):
            label = "no prompt" if h == NO_RUN else f"{h[:12]} · {grp.iloc[0].prompt_file or '?'}"
            hashes.append((f"{label} ({len(grp)})", h))
        self._rendering = True
        try:
            for dropdown, opts, everything in ((self.run_filter, runs, "all runs"),
                                               (self.hash_filter, hashes, "all prompts")):
                keep = dropdown.value
                options = [(f"{everything} ({len(df)})", ALL)] + opts
                if keep not in [v for _, v in options]:
                    options.append((f"{keep} (no pending proposals)", keep))
                dropdown.options = options
                dropdown.value = keep
        finally:
            self._rendering = False

    def _filtered(self):
        df = self.pending
        run, h = self.run_filter.value, self.hash_filter.value
        if run == NO_RUN:
            df = df[df.stage_run_id.isna()]
        elif run != ALL:
            df = df[df.stage_run_id.eq(int(run)).fillna(False).astype(bool)]
        if h == NO_RUN:
            df = df[df.prompt_hash.isna()]
        elif h != ALL:
            df = df[df.prompt_hash == h]
        return df

    def _row(self, rec) -> ReviewRow:
        import pandas as pd

        row = self._row_cache.get(rec.node_id)
        if row is None:
            W = self._W
            action = W.Dropdown(options=list(ACTIONS), value="keep", layout=W.Layout(width="100px"))
            new_name = W.Text(placeholder="new name (rename, or accept as)", layout=W.Layout(width="260px"))
            label = W.HTML(layout=W.Layout(width="480px"))
            message = W.HTML()
            row = ReviewRow(rec.node_id, action, new_name, label, message,
                            W.HBox([label, action, new_name, message]))

            def typed(change, row=row):
                # Typing a name on an undecided row means "rename it".
                if change["new"].strip() and row.action.value == "keep":
                    row.action.value = "rename"

            new_name.observe(typed, names="value")
            self._row_cache[rec.node_id] = row
        parent = f"{_esc(rec.parent_path)} ~ " if rec.parent_path else ""
        hidden = " <i>(under a rejected node)</i>" if rec.under_rejected else ""
        run = "" if pd.isna(rec.stage_run_id) else f"run {rec.stage_run_id}"
        h = rec.prompt_hash if isinstance(rec.prompt_hash, str) else ""
        prov = " · ".join(x for x in (run, h[:8]) if x)
        row.label.value = (f"<code>{_esc(rec.node_id)}</code> {parent}<b>{_esc(rec.name)}</b>{hidden}"
                           + (f" <small style='color:grey'>{_esc(prov)}</small>" if prov else ""))
        return row

    def _render(self) -> None:
        if self._rendering:
            return
        shown = self._filtered()
        total = len(shown)
        self.rows = [self._row(rec) for rec in shown.head(self.max_rows).itertuples(index=False)]
        self.rows_box.children = [r.box for r in self.rows]
        more = (f"; showing the first {len(self.rows)}, narrow the filters to see the rest"
                if total > len(self.rows) else "")
        self.summary.value = (f"{len(self.pending)} pending proposal(s), {total} match the filters{more}"
                              if len(self.pending) else "no pending proposals")

    def _on_filter(self, change) -> None:
        self._render()

    # -- applying -----------------------------------------------------------------------------
    def decisions(self) -> list[Decision]:
        """The decisions of the rows shown (what Apply writes)."""
        return [r.decision() for r in self.rows]

    def apply(self) -> list[DecisionResult]:
        """Write the shown rows' decisions; show per-row results and counts; re-read the table."""
        shown = {r.node_id for r in self.rows}
        hidden_set = sum(r.action.value != "keep" for nid, r in self._row_cache.items() if nid not in shown)
        results = apply_decisions(self.ws, self.decisions())
        self.results = results
        self.history.extend(results)
        for res in results:
            row = self._row_cache.get(res.node_id)
            if row is None:
                continue
            if res.status == "failed":     # keep the choice so the curator can fix it; say why
                row.message.value = f"<span style='color:#b00'>{_esc(res.outcome)}</span>"
            elif res.status == "skipped":
                row.message.value = ""
            else:
                row.reset()
        self.result_html.value = self._results_html(results, hidden_set)
        self.refresh()
        return results

    @property
    def applied(self) -> list[DecisionResult]:
        """Every decision that changed the workspace in this session (an unchanged re-apply is not here)."""
        return [r for r in self.history if r.status == "applied"]

    def _on_click(self, _button) -> None:
        self.error = None
        try:
            self.apply()
        except Exception as exc:   # a button callback's exception would vanish into the kernel log
            self.error = f"{type(exc).__name__}: {exc}"
            self.result_html.value = f"<span style='color:#b00'>Apply stopped: {_esc(self.error)}</span>"

    @staticmethod
    def _results_html(results: list[DecisionResult], hidden_set: int) -> str:
        counts = count_outcomes(results)
        head = ", ".join(f"{n} {s}" for s, n in counts.items()) or "nothing to apply"
        if hidden_set:
            head += (f"; {hidden_set} decision(s) on rows hidden by the filters were not applied "
                     "(show them and press Apply again)")
        lines = [f"<b>{_esc(head)}</b>"]
        listed = [r for r in results if r.status != "skipped"]
        if listed:
            lines.append("<table><tr><th>node</th><th>path</th><th>action</th><th>outcome</th></tr>")
            for r in listed:
                what = r.action + (f" as {r.new_name!r}" if r.new_name and r.action != "reject" else "")
                detail = f" — {r.detail}" if r.status == "applied" and r.detail else ""
                colour = {"failed": "#b00", "unchanged": "grey"}.get(r.status, "inherit")
                lines.append(f"<tr><td><code>{_esc(r.node_id)}</code></td><td>{_esc(r.path or '(gone)')}</td>"
                             f"<td>{_esc(what)}</td>"
                             f"<td style='color:{colour}'>{_esc(r.outcome + detail)}</td></tr>")
            lines.append("</table>")
        return "\n".join(lines)
