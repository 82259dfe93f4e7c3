"""A trial: prompt versions x a test set, run through the stages' seam (cache, price, dry run, budget, failure-rate
stop) by the real stage with `record` writing nothing, every output and failure stored in `trials` /
`trial_outputs`, so any past trial can be reopened (`Trial.load`) with its matrix and figures."""

from __future__ import annotations

import getpass
import html
import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from workbench.analysis.trials.assertions import check_specs, evaluate, grade
from workbench.analysis.trials.metrics import figures
from workbench.analysis.trials.stages import Item, check_stage, jsonable, make_stage, resolve, show
from workbench.analysis.trials.testset import TestSet
from workbench.analysis.trials.versions import Version, as_version, store_versions
from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.stages.base import Outcome, RunReport

OUTPUT_COLUMNS = ["item", "version", "label", "image_id", "status", "call_key", "raw", "parsed", "shown", "error",
                  "prompt_tokens", "completion_tokens", "cost_usd", "latency_s", "cached", "checks"]
MARK = {"parse_failed": "⚠ parse failed", "call_failed": "✖ call failed", "not_run": "— not run"}


@dataclass
class Trial:
    """One trial, as run or reopened. `matrix()` and `metrics()` are DataFrames; `failed` is True when no call
    gave a readable reply; `errors` lists the first distinct errors."""

    id: int | None
    stage: str
    test_set: str
    items: list[str]
    versions: list[dict]                 # {hash, name, note}, in column order
    status: str                          # running | done | stopped | failed | dry run
    outputs: pd.DataFrame
    assertions: list[str] = field(default_factory=list)
    who: str | None = None
    created_at: str | None = None
    reports: dict[str, Any] = field(default_factory=dict)   # hash -> RunReport (or its stored dict)
    error: str | None = None
    ws: Workspace | None = field(default=None, repr=False, compare=False)   # for `metrics()` (κ reads votes)

    # -- reading -------------------------------------------------------------------------------------
    @property
    def columns(self) -> dict[str, str]:
        """hash -> column label (the version's name, with its hash when two names are the same)."""
        names = [v["name"] for v in self.versions]
        return {v["hash"]: v["name"] if names.count(v["name"]) == 1 else f"{v['name']} [{v['hash'][:6]}]"
                for v in self.versions}

    @property
    def failed(self) -> bool:
        return self.status != "dry run" and not (self.outputs.status == "ok").any()

    @property
    def errors(self) -> list[str]:
        seen: dict[str, str] = {}
        for v, e, st in zip(self.outputs.version, self.outputs.error, self.outputs.status):
            if e and st != "ok":
                seen.setdefault(f"{MARK[st]}: {e}", self.columns.get(v, v))
        if self.error:
            return [self.error, *seen]
        return [f"{col}: {e}" for e, col in seen.items()]

    def cell(self, row: pd.Series) -> str:
        if row["status"] == "ok":
            return row["shown"]
        return f"{MARK[row['status']]}: {row['error'] or 'no reason recorded'}"

    def matrix(self) -> pd.DataFrame:
        """One row per test item (its label and image), one column per version: the output as a person reads it,
        or the failure with its error."""
        out = self.outputs
        first = out.drop_duplicates("item").set_index("item")
        table = pd.DataFrame({"item": self.items,
                              "label": [first.label.get(i, i) for i in self.items],
                              "image_id": [first.image_id.get(i) for i in self.items]})
        for h, col in self.columns.items():
            cells = {r["item"]: self.cell(r) for _, r in out[out.version == h].iterrows()}
            table[col] = [cells.get(i, "— not run") for i in self.items]
        return table

    def raw(self, item: str, version: str) -> str | None:
        """The raw reply of one cell (`version`: its hash or column label)."""
        h = next((k for k, c in self.columns.items() if version in (k, c)), version)
        hit = self.outputs[(self.outputs.item == item) & (self.outputs.version == h)]
        return None if hit.empty else hit.raw.iloc[0]

    def metrics(self, ws: Workspace | None = None) -> pd.DataFrame:
        """Figures per version (rows: figures, columns: versions); `ws`: default the trial's own workspace."""
        ws = ws or self.ws
        if ws is None:
            raise WorkbenchError("Trial.metrics needs the workspace: trial.metrics(ws)")
        if self.status == "dry run":
            return pd.DataFrame({self.columns[h]: pd.Series({
                "calls to make": r.to_call, "already answered": r.cached, "est. input tokens": r.est_prompt_tokens,
                "est. output tokens": r.est_completion_tokens, "est. cost usd": r.est_cost_usd}, dtype=object)
                for h, r in self.reports.items()})
        return figures(ws, self.stage, self.outputs, self.columns, self.assertions)

    def summary(self) -> str:
        if self.status == "dry run":
            return "\n".join(f"{self.columns[h]}: {r.summary()}" for h, r in self.reports.items())
        out = self.outputs
        head = (f"trial {self.id} ({self.stage}, test set {self.test_set!r}, {len(self.items)} item(s) x "
                f"{len(self.versions)} version(s)): {self.status}")
        lines = [head]
        for h, col in self.columns.items():
            o = out[out.version == h]
            counts = o.status.value_counts()
            lines.append(f"  {col} ({h[:8]}): {counts.get('ok', 0)} ok, {counts.get('parse_failed', 0)} parse "
                         f"failure(s), {counts.get('call_failed', 0)} call failure(s), {counts.get('not_run', 0)} "
                         "not run")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """In a notebook: the summary, then the matrix with each cell's lines kept."""
        m = self.matrix().drop(columns=["image_id"])
        body = m.map(lambda v: html.escape(str(v)).replace("\n", "<br>") if v is not None else "")
        return (f"<pre>{html.escape(self.summary())}</pre>"
                + body.to_html(escape=False, index=False).replace("<td>", '<td style="text-align:left">'))

    # -- reopening -----------------------------------------------------------------------------------
    @classmethod
    def load(cls, ws: Workspace, trial_id: int) -> Trial:
        r = ws.store.one("SELECT * FROM trials WHERE id=?", (int(trial_id),))
        if r is None:
            raise WorkbenchError(f"no trial {trial_id}; `workbench prompts trials WORKSPACE` lists them")
        hashes = json.loads(r["versions"])
        names = {v["hash"]: dict(v) for v in ws.store.query(
            f"SELECT hash, name, note FROM trial_versions WHERE hash IN ({','.join('?' * len(hashes))})", hashes)}
        rows = [dict(x) for x in ws.store.query(
            f"SELECT {', '.join(OUTPUT_COLUMNS)} FROM trial_outputs WHERE trial_id=?", (r["id"],))]
        for x in rows:
            x["parsed"] = json.loads(x["parsed"]) if x["parsed"] else None
            x["checks"] = json.loads(x["checks"]) if x["checks"] else {}
        return cls(r["id"], r["stage"], r["test_set"], json.loads(r["items"]),
                   [names.get(h, {"hash": h, "name": h[:8], "note": ""}) for h in hashes], r["status"],
                   pd.DataFrame(rows, columns=OUTPUT_COLUMNS), json.loads(r["assertions"]), r["who"],
                   r["created_at"], json.loads(r["summary"] or "{}"), r["error"], ws)


def list_trials(ws: Workspace) -> pd.DataFrame:
    """Every stored trial, newest first: who, when, stage, test set, versions, rows and what came of it."""
    rows = ws.store.query(
        "SELECT t.id, t.created_at, t.who, t.stage, t.test_set, t.versions, json_array_length(t.items) AS rows, "
        "t.status, coalesce(sum(o.status='ok'),0) AS ok, coalesce(sum(o.status<>'ok'),0) AS failed, "
        "sum(o.cost_usd) AS cost_usd, t.error FROM trials t LEFT JOIN trial_outputs o ON o.trial_id = t.id "
        "GROUP BY t.id ORDER BY t.id DESC")
    names = dict(ws.store.query("SELECT hash, name FROM trial_versions"))
    out = [dict(r) for r in rows]
    for r in out:
        r["versions"] = ", ".join(names.get(h, h[:8]) for h in json.loads(r["versions"]))
    return pd.DataFrame(out, columns=["id", "created_at", "who", "stage", "test_set", "versions", "rows", "status",
                                      "ok", "failed", "cost_usd", "error"])


# -- running -----------------------------------------------------------------------------------------
def _output(stage: str, item: Item, v: Version, oc: Outcome | None, why_not: str | None,
            specs: list[str]) -> dict:
    rec = oc.record if oc is not None else None
    if rec is None:
        status, err = "not_run", why_not or "not called"
    elif not rec.ok:
        status, err = "call_failed", oc.error or rec.error or "call failed"
    elif oc.error is not None:
        status, err = "parse_failed", oc.error
    else:
        status, err = "ok", None
    value = oc.value if status == "ok" and oc is not None else None
    shown = show(stage, value, rec.raw_text if rec else None) if status == "ok" else None
    parent = getattr(item.row, "parent_name", None)
    return {"item": item.key, "version": v.hash, "label": item.label, "image_id": item.image_id, "status": status,
            "call_key": oc.key if oc is not None and rec is not None else None,
            "raw": rec.raw_text if rec else None, "parsed": jsonable(value), "shown": shown, "error": err,
            "prompt_tokens": rec.prompt_tokens if rec else None,
            "completion_tokens": rec.completion_tokens if rec else None,
            "cost_usd": rec.cost_usd if rec else None, "latency_s": rec.latency_s if rec else None,
            "cached": int(bool(oc is not None and rec is not None and not oc.fresh)),
            "checks": evaluate(specs, ok=status == "ok", raw=rec.raw_text if rec else None, value=value,
                               shown=shown, parent=parent)}


def _versions(ws: Workspace, stage: str, versions: list) -> list[Version]:
    vs = [as_version(ws, stage, v) for v in versions]
    if not vs:
        raise WorkbenchError("a trial needs at least one prompt version (e.g. `current` and an edited file)")
    seen: dict[str, str] = {}
    for v in vs:
        if v.hash in seen:
            raise WorkbenchError(f"versions {seen[v.hash]!r} and {v.name!r} are the same text (hash {v.hash}); "
                                 "give each version once")
        seen[v.hash] = v.name
    return vs


def _run_version(ws: Workspace, stage: str, v: Version, items: list[Item], specs: list[str], *,
                 budget_left: float | None, endpoint, progress: bool) -> tuple[list[dict], RunReport | None]:
    if budget_left is not None and budget_left <= 0:
        return [_output(stage, it, v, None, "the trial's budget is spent (earlier versions used it)", specs)
                for it in items], None
    st = make_stage(ws, stage, v.template)
    by_row = {id(it.row): it for it in items}
    got: dict[str, Outcome] = {}
    report = st.run(ws, [it.row for it in items], endpoint=endpoint, budget_usd=budget_left, progress=progress,
                    on_result=lambda oc: got.setdefault(by_row[id(oc.row)].key, oc))
    why = f"stopped: {report.stopped}" if report.stopped else None
    return [_output(stage, it, v, got.get(it.key), why, specs) for it in items], report


def run_trial(ws: Workspace, stage: str, versions: list, test_set: TestSet | str, *,
              budget_usd: float | None = None, dry_run: bool = False, endpoint=None, who: str | None = None,
              assertions: list[str] | None = None, progress: bool = False) -> Trial:
    """Run every version on every item of the test set and store the trial (dry run: the estimate per version,
    nothing stored or called). `versions`: `current`, files, stored hashes, PromptTemplates or `Version`s;
    budget_usd: for the whole trial (each version gets what the earlier ones left). Nothing but the trial tables,
    the call cache and the prompt texts is written."""
    stage = check_stage(ws, stage)
    ts = TestSet.load(ws, test_set) if isinstance(test_set, str) else test_set
    if check_stage(ws, ts.stage) != stage:
        raise WorkbenchError(f"test set {ts.name!r} is for stage {ts.stage}, not {stage}")
    specs = list(ts.assertions if assertions is None else assertions)
    check_specs(specs)
    vs = _versions(ws, stage, versions)
    items = resolve(ws, stage, ts.items)
    cols = [{"hash": v.hash, "name": v.name, "note": v.note} for v in vs]
    if dry_run:
        reports = {v.hash: make_stage(ws, stage, v.template).run(ws, [it.row for it in items], dry_run=True,
                                                                 endpoint=endpoint, progress=False) for v in vs}
        return Trial(None, stage, ts.name, ts.items, cols, "dry run", pd.DataFrame(columns=OUTPUT_COLUMNS), specs,
                     reports=reports, ws=ws)
    ts.save(ws, who=who)
    store_versions(ws, vs)
    who = who or getpass.getuser()
    with ws.store.write() as conn:
        tid = conn.execute("INSERT INTO trials(stage, test_set, items, versions, assertions, who, created_at, status) "
                           "VALUES (?,?,?,?,?,?,?, 'running')",
                           (stage, ts.name, json.dumps(ts.items), json.dumps([v.hash for v in vs]), json.dumps(specs),
                            who, utcnow())).lastrowid
    rows: list[dict] = []
    reports: dict[str, RunReport] = {}
    error: str | None = "interrupted"      # until the loop below finishes or fails
    try:
        spent = 0.0
        for v in vs:
            left = None if budget_usd is None else budget_usd - spent
            out, rep = _run_version(ws, stage, v, items, specs, budget_left=left, endpoint=endpoint,
                                    progress=progress)
            rows += out
            if rep is not None:
                reports[v.hash] = rep
                spent += rep.cost_usd or 0.0
        grade(ws, rows, specs, budget_usd=None if budget_usd is None else budget_usd - spent)
        error = None
    except Exception as exc:        # stored as the trial's failure, then raised as it was
        error = str(exc) or type(exc).__name__
        raise
    finally:
        _finish(ws, tid, rows, reports, error)
    return Trial.load(ws, tid)


def _finish(ws: Workspace, tid: int, rows: list[dict], reports: dict[str, RunReport], error: str | None) -> None:
    ok = any(r["status"] == "ok" for r in rows)
    status = ("failed" if error or not ok else
              "stopped" if any(r.stopped for r in reports.values()) else "done")
    if not ok and not error:
        first = next((r["error"] for r in rows if r["error"]), "no output")
        error = f"every call failed or was unreadable; first error: {first}"
    with ws.store.write() as conn:
        conn.executemany(
            f"INSERT OR REPLACE INTO trial_outputs(trial_id, {', '.join(OUTPUT_COLUMNS)}) "
            f"VALUES (?, {', '.join('?' * len(OUTPUT_COLUMNS))})",
            [(tid, *[json.dumps(r[c]) if c in ("parsed", "checks") else r[c] for c in OUTPUT_COLUMNS])
             for r in rows])
        conn.execute("UPDATE trials SET status=?, finished_at=?, endpoint=?, model=?, stage_runs=?, summary=?, "
                     "error=? WHERE id=?",
                     (status, utcnow(), next((r.endpoint for r in reports.values()), None),
                      next((r.model for r in reports.values()), None),
                      json.dumps({h: r.run_id for h, r in reports.items()}),
                      json.dumps({h: r.as_dict() for h, r in reports.items()}), error, tid))
