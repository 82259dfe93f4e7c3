"""The stage contract: a stage names its rows and records each outcome; the base owns everything else.

    class Stage:      name, execute(ws, run) -> report            (embed, match, select, export)
    class LLMStage:   name, rows(ws), prompt_for/context/images,  (expand, filter, qa, referee)
                      parse(raw, row) [raise ParseFailure], record(ws, outcome, run)

`Stage.run(ws)` and `LLMStage.run(ws, ...)` are the base's and cannot be overridden (`__init_subclass__`
refuses): they open the stage-run record (`core/runs.py`: one writer per stage, final status done /
stopped / failed / interrupted), and for LLM stages run the loop

    rows → render → key → one batched cache lookup → (dry run: calls, tokens, cost) → cached replies parsed →
    a `CallPlan` of the missing keys → one dispatcher calls them (`stages/dispatch.py`: local asyncio, the
    Batch API or the engine in effect, e.g. Ray) → each reply committed to `llm_calls` the moment it reaches
    this process → parse → record(outcome) in its own transaction → the `RunGuard`'s failure-rate and budget stops.

A parse failure is one exception, `ParseFailure(reason)`; the base counts it and passes the outcome to
`record` with `outcome.error` set, so the stage keeps the dropped row and its reason beside the kept ones
(the raw reply stays in `llm_calls`). A failed *call* is never passed to `record`: nothing was decided and
the next run calls again. Only calls made in this run count towards the failure-rate stop: stored replies
that do not parse are reported, not held against the endpoint (`--refresh-failed` asks for them again). Keys
that failed in an earlier run are asked after every never-tried key and counted apart (`failed_again`), so a
key that fails every time cannot stop a resume; the report names the rows whose calls failed (`failing`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from workbench.core.errors import ParseFailure, WorkbenchError
from workbench.core.runs import StageRun
from workbench.core.workspace import Workspace
from workbench.llm.batch import batch_price, check_endpoint
from workbench.llm.cache import CallCache, CallRecord, request_json
from workbench.llm.client import Endpoint, redact_url, resolve_endpoint
from workbench.llm.cost import cost_usd, estimate_prompt_tokens
from workbench.llm.prompt_store import remember
from workbench.llm.prompts import PromptTemplate
from workbench.stages.dispatch import CallPlan, Dispatcher, RunGuard, current, pick

__all__ = ["Stage", "LLMStage", "ParseFailure", "Outcome", "RunReport", "StageRun"]

DEFAULT_OUTPUT_TOKENS = 256
FAILING_KEPT = 100         # rows of `RunReport.failing` kept (`failed_rows` stays whole)
_LABEL_FIELDS = ("parent_path", "sample_id", "image_id", "task_path", "reference_path", "item", "id", "name")
_FINAL = ("run",)


def _public_url(url: str | None) -> str | None:
    """The base URL as stored in `stage_runs.params`: credentials in it are never written."""
    return redact_url(url) if url else url


class Stage:
    """A pipeline stage. Subclasses set `name` and implement `execute(ws, run)`; `run(ws)` is the base's."""

    name: str = ""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.__module__ != __name__:
            for attr in _FINAL:
                if attr in cls.__dict__:
                    raise TypeError(f"{cls.__name__} overrides {attr}(): the stage base owns the loop and the "
                                    "run record; implement rows/parse/record (or execute) instead")

    @property
    def lock_key(self) -> str | None:
        """Two live processes with the same key may not run at once (None: no lock)."""
        return self.name

    def run_params(self) -> dict:
        """Recorded in `stage_runs.params`."""
        return {}

    def provenance(self) -> dict:
        """prompt_file, prompt_hash, model for the run record."""
        return {}

    def check(self, ws: Workspace) -> None:
        """Raise a WorkbenchError if the stage cannot run (missing inputs); called before any run record."""

    def execute(self, ws: Workspace, run: StageRun) -> Any:
        raise NotImplementedError

    def run(self, ws: Workspace) -> Any:
        self.check(ws)
        with ws.stage_run(self.name, self.run_params(), lock_key=self.lock_key, **self.provenance()) as run:
            report = self.execute(ws, run)
            summary = asdict(report) if is_dataclass(report) and not isinstance(report, type) else dict(report or {})
            run.summary.update({k: v for k, v in summary.items() if not k.startswith("_")})
            if getattr(report, "stopped", None):
                run.stop(report.stopped)
        if hasattr(report, "run_id"):
            report.run_id = run.id
        return report


@dataclass
class Outcome:
    row: Any
    key: str
    prompt: PromptTemplate
    record: CallRecord | None          # None: not called (stopped, or dry run / cache-only miss)
    value: Any = None                  # what parse returned (when ok)
    error: str | None = None           # call error or parse failure reason
    fresh: bool = False                # called in this run (not served from the cache)

    @property
    def ok(self) -> bool:
        return self.record is not None and self.record.ok and self.error is None

    @property
    def parse_failed(self) -> bool:
        return self.record is not None and self.record.ok and self.error is not None


@dataclass
class RunReport:
    stage: str
    endpoint: str
    model: str
    run_id: int | None = None
    rows: int = 0
    cached: int = 0
    to_call: int = 0
    called: int = 0
    ok: int = 0
    call_failed: int = 0
    parse_failed: int = 0
    not_run: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0        # None: the endpoint's price is unknown
    est_prompt_tokens: int = 0
    est_completion_tokens: int = 0
    est_cost_usd: float | None = 0.0
    stopped: str | None = None          # why the run stopped early ('budget ...', 'failure rate ...')
    dry_run: bool = False
    batch: bool = False                 # through the Batch API (costs at [batch] price_factor x list price)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)   # a sample of error messages
    counts: dict[str, int] = field(default_factory=dict)   # what the stage recorded (kept, added, votes_1, ...)
    produces: str | None = None         # the count that measures the stage's output (0 = nothing for what follows)
    retried: int = 0                    # rows asked again whose key failed in an earlier run (asked last) ...
    failed_again: int = 0               # ... and failed again: not counted towards the failure-rate stop
    failed_rows: int = 0                # rows whose call in this run failed or whose fresh reply did not parse
    failing: list[dict] = field(default_factory=list)   # the first FAILING_KEPT of them: row, key, again, error, reply
    reasons: dict[str, int] = field(default_factory=dict)   # dry run: why each call is to make (new, prompt changed...)
    pending: list = field(default_factory=list, repr=False)  # dry run: the rows to call (one per key), not stored

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "pending"}

    def tally(self, rec: CallRecord) -> None:
        """Count one call made in this run (an unknown price makes the run's cost unknown)."""
        self.called += 1
        self.prompt_tokens += rec.prompt_tokens or 0
        self.completion_tokens += rec.completion_tokens or 0
        if rec.cost_usd is None:
            self.cost_usd = None
        elif self.cost_usd is not None:
            self.cost_usd += rec.cost_usd

    def _cost(self, value: float | None, approx: bool = False) -> str:
        return "cost unknown (no price for this model)" if value is None else f"{'~' if approx else ''}${value:.4f}"

    def summary(self) -> str:
        if self.dry_run:
            return (f"dry run ({self.stage}, {self.model}): {self.rows} row(s), {self.cached} already answered, "
                    f"{self.to_call} call(s) to make, ~{self.est_prompt_tokens:,} input + "
                    f"~{self.est_completion_tokens:,} output tokens (estimate), {self._cost(self.est_cost_usd, True)}"
                    + (" at batch price" if self.batch and self.to_call else "")
                    + (f"; why: {why_text(self.reasons)}" if self.reasons else ""))
        s = (f"{self.stage} ({self.model}): {self.rows} row(s): {self.cached} from cache, {self.called} called; "
             f"{self.ok} ok, {self.call_failed} call failure(s), {self.parse_failed} parse failure(s)")
        if self.not_run:
            s += f", {self.not_run} not run"
        if self.retried:
            s += (f"; {self.retried} asked again after failing in an earlier run, {self.failed_again} failed again "
                  "(not counted towards the failure-rate stop)")
        if self.counts:
            s += "; " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in self.counts.items())
        s += f"; {self.prompt_tokens:,}+{self.completion_tokens:,} tokens, {self._cost(self.cost_usd)}" \
             f"{' (batch price)' if self.batch and self.called else ''}, {self.seconds:.1f}s"
        if self.stopped:
            s += f"; STOPPED: {self.stopped}"
        return s


class LLMStage(Stage):
    """An LLM/VLM stage. Set `name`, `prompt` (or `prompt_for`), `params`; implement `rows`, `context`, `parse`
    and `record`. Run it with `stage.run(ws, ...)`."""

    prompt: PromptTemplate | None = None
    params: dict = {}                  # sampling params sent with every call (temperature, max_tokens, ...)
    endpoint: str | Endpoint = "default"
    expected_output_tokens: int = DEFAULT_OUTPUT_TOKENS   # for dry-run estimates when max_tokens is unset
    produces: str | None = None        # the `run.counts` entry that measures what the stage hands on
    keying_only: bool = False          # a dry run keys rows without sending them (images as content references)

    # -- what a stage supplies ---------------------------------------------------------------------
    def rows(self, ws: Workspace) -> list:
        raise WorkbenchError(f"stage {self.name!r}: no rows given")

    def prompt_for(self, row: Any) -> PromptTemplate:
        if self.prompt is None:
            raise WorkbenchError(f"stage {self.name!r} has no prompt template")
        return self.prompt

    def context(self, row: Any) -> dict:
        return dict(row) if isinstance(row, dict) else {"row": row}

    def images(self, row: Any) -> list[str]:
        return []

    def parse(self, raw: str, row: Any) -> Any:
        """The fields a reply gives, or `raise ParseFailure(reason)`."""
        return raw

    def record(self, ws: Workspace, outcome: Outcome, run: StageRun) -> None:
        """Write what one reply decided (parsed or not: `outcome.error` holds a parse failure's reason).
        Runs inside a write transaction; count things with `run.counts`."""

    def previous_key(self, ws: Workspace, row: Any) -> str | None:
        """The call key this row's stored result came from (None: never answered). A dry run compares it with
        the key it would send now to say why a call is to make (`why_pending`)."""
        return None

    def changed_inputs(self, ws: Workspace, row: Any) -> str:
        """Why the row's request differs when model, prompt and parameters did not (the stage knows its inputs)."""
        return "inputs changed"

    # -- helpers -----------------------------------------------------------------------------------
    def render(self, row: Any) -> list[dict]:
        return self.prompt_for(row).render(images=self.images(row), **self.context(row))

    def row_label(self, row: Any) -> str:
        """How a report names a row: its first identifying field (a parent's path, a sample or image id...)."""
        get = row.get if isinstance(row, dict) else lambda f: getattr(row, f, None)
        for f in _LABEL_FIELDS:
            if get(f) is not None:
                return str(get(f))
        return "(top level)" if get("level") == 1 else repr(row)[:80]

    def parse_or_reason(self, raw: str, row: Any) -> tuple[Any, str | None]:
        try:
            return self.parse(raw, row), None
        except ParseFailure as exc:
            return None, exc.reason or "unreadable reply"

    # -- the loop (the base's) ---------------------------------------------------------------------
    def run(self, ws: Workspace, rows: Iterable | None = None, *, endpoint: str | Endpoint | None = None,
            on_result: Callable[[Outcome], None] | None = None, dry_run: bool = False,
            budget_usd: float | None = None, max_failure_rate: float | None = None, cache_only: bool = False,
            progress: bool | None = None, refresh_failed: bool = False, batch: bool | None = None,
            engine: Dispatcher | None = None) -> RunReport:
        """Run the stage over `rows` (default: `self.rows(ws)`).

        on_result: also called with every outcome (after `record`), e.g. by a notebook.
        cache_only: parse stored replies, call nothing (`reparse`).
        refresh_failed: call again where the stored reply does not parse (the new reply replaces it).
        batch: send the missing calls through the OpenAI Batch API (`llm/batch.py`; default `[batch] enabled`):
        submitted, polled until done (a restarted run resumes polling), ingested into the same cache rows.
        engine: where the missing calls are made (`workbench/engine/`; default `stages.dispatch.current()`):
        None/local here, or e.g. a RayEngine whose workers call and return CallRecords that this process commits
        and records exactly as local replies (same keys: a Ray run then a local one calls nothing twice).
        """
        t0 = time.monotonic()
        ep = endpoint or self.endpoint
        ep = ep if isinstance(ep, Endpoint) else resolve_endpoint(ws.config, ep or "default")
        limits = ws.config.limits
        progress = limits.progress if progress is None else progress
        batch = bool(ws.config.batch.enabled if batch is None else batch) and not cache_only
        if batch:
            check_endpoint(ep)
        if engine is None:
            engine = current()
        params = dict(self.params)
        self.keying_only = dry_run
        try:
            keyed = self._key_rows(ws, ep, params, self.rows(ws) if rows is None else rows, refresh_failed)
        finally:
            self.keying_only = False
        report = RunReport(stage=self.name, endpoint=ep.name, model=ep.model, rows=len(keyed.items), dry_run=dry_run,
                           produces=self.produces, batch=batch)
        report.cached = sum(1 for *_, k in keyed.items if k in keyed.found)
        report.to_call = 0 if cache_only else len(keyed.pending)
        price = batch_price(ep.price, ws.config.batch.price_factor) if batch else ep.price
        # Expected reply length (the stage's estimate, capped by max_tokens): dry-run figures and budget.
        out_tokens = min(params.get("max_tokens") or self.expected_output_tokens, self.expected_output_tokens)
        est = {k: estimate_prompt_tokens(m) for k, (_, m) in keyed.pending.items()}
        report.est_prompt_tokens = sum(est.values())
        report.est_completion_tokens = out_tokens * len(keyed.pending)
        report.est_cost_usd = cost_usd(price, report.est_prompt_tokens, report.est_completion_tokens)
        if dry_run:
            report.pending = keyed.pending_rows()
            report.reasons = self.why_pending(ws, ep, params, report.pending, keyed)
            report.seconds = time.monotonic() - t0
            return report

        used = {p.hash: p for _, p, _, _ in keyed.items}    # every template the rows use (expand: one per kind)
        first = keyed.items[0][1] if keyed.items else self.prompt
        with ws.stage_run(self.name, self._call_params(ep, params, keyed, report, engine, used),
                          lock_key=self.lock_key,
                          model=ep.model, prompt_file=first.display_path if first else None,
                          prompt_hash=first.hash if first else None) as run:
            report.run_id = run.id
            remember(ws, used.values())   # each template's text, once by hash
            guard = RunGuard(limits.budget_usd if budget_usd is None else budget_usd,
                             limits.max_failure_rate if max_failure_rate is None else max_failure_rate,
                             limits.min_calls_before_failure_check)
            deliver = _Delivery(stage=self, ws=ws, run=run, report=report, guard=guard, on_result=on_result,
                                asked=keyed.asked(), retried=keyed.retried)
            plan = CallPlan(ws=ws, stage=self.name, endpoint=ep, params=params, pending=keyed.pending,
                            requests=keyed.requests, est_tokens=est, out_tokens=out_tokens, price=price,
                            run_id=run.id, guard=guard, report=report, deliver=deliver, progress=progress)
            try:
                for key in dict.fromkeys(k for *_, k in keyed.items):
                    if key in keyed.found:
                        deliver(key, keyed.found[key], False)
                if plan.pending:
                    pick(cache_only=cache_only, batch=batch, engine=engine).dispatch(plan)
            finally:
                report.stopped = guard.reason()
                report.counts = dict(run.counts)
                report.seconds = time.monotonic() - t0
                if report.stopped:
                    run.stop(report.stopped)
                run.summary.update(report.as_dict())
        return report

    def why_pending(self, ws: Workspace, ep: Endpoint, params: dict, rows: list, keyed: _Keyed) -> dict[str, int]:
        """How many of the calls to make come from which change: the row's stored result was answered with
        another model, prompt or parameters, its inputs changed (`changed_inputs`), its call failed, or it is new."""
        out: dict[str, int] = {}
        keys = {id(row): key for row, _, _, key in keyed.items}
        prompts = {id(row): prompt for row, prompt, _, _ in keyed.items}
        for row in rows:
            old = self.previous_key(ws, row)
            rec = ws.store.one("SELECT model, prompt_hash, request, status FROM llm_calls WHERE key=?",
                               (old,)) if old else None
            if rec is None:
                why = "new"
            elif old == keys[id(row)]:
                why = "earlier call failed or its reply was refreshed"
            elif rec["model"] != ep.model:
                why = f"model changed ({rec['model']} -> {ep.model})"
            elif rec["prompt_hash"] and rec["prompt_hash"] != prompts[id(row)].hash:
                why = "prompt changed"
            elif json.loads(rec["request"] or "{}").get("params") != json.loads(request_json(ep.model, [], params)
                                                                              ).get("params"):
                why = "sampling parameters changed"
            else:
                why = self.changed_inputs(ws, row)
            out[why] = out.get(why, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def _key_rows(self, ws: Workspace, ep: Endpoint, params: dict, rows: Iterable, refresh_failed: bool) -> _Keyed:
        """Render and key every row (one call per distinct key), and look every key up in the cache at once."""
        items = []
        requests: dict[str, str] = {}      # key -> stored request JSON (computed once: it is also the key's input)
        for row in rows:
            prompt = self.prompt_for(row)
            messages = prompt.render(images=self.images(row), **self.context(row))
            req = request_json(ep.model, messages, params)
            key = hashlib.sha256(req.encode()).hexdigest()
            items.append((row, prompt, messages, key))
            requests[key] = req
        # One lookup of every stored record, failed ones included: a key whose stored call failed is asked again.
        stored = CallCache(ws.store).get_many((k for *_, k in items), ok_only=False)
        found = {k: rec for k, rec in stored.items() if rec.ok}
        if refresh_failed:
            for row, _, _, key in items:
                rec = found.get(key)
                if rec is not None and self.parse_or_reason(rec.raw_text or "", row)[1] is not None:
                    del found[key]
        pending: dict[str, tuple[PromptTemplate, list[dict]]] = {}
        for _row, prompt, messages, key in items:
            if key not in found and key not in pending:
                pending[key] = (prompt, messages)
        # Keys with a stored reply that failed (a failed call, or with refresh_failed a reply that did not parse)
        # are asked after every never-tried key, and their failures cannot stop this run: a key that fails every
        # time would otherwise trip the failure-rate stop of every resume before the new keys are asked.
        retried = {k for k in pending if k in stored}
        pending = {k: v for k, v in pending.items() if k not in retried} | \
                  {k: v for k, v in pending.items() if k in retried}
        return _Keyed(items=items, requests=requests, found=found, pending=pending, retried=retried)

    def _call_params(self, ep: Endpoint, params: dict, keyed: _Keyed, report: RunReport,
                     engine: Dispatcher | None, used: dict[str, PromptTemplate]) -> dict:
        """What `stage_runs.params` records of a run that may call (credentials in URLs are never written);
        `used`: the templates the rows use, by hash (their display paths computed once each, not per row)."""
        return {"endpoint": ep.name, "base_url": _public_url(ep.base_url), "params": params,
                **({"pool": ep.public_urls} if ep.members else {}), **({"batch": True} if report.batch else {}),
                "rows": len(keyed.items), **({"engine": engine.name} if engine is not None else {}),
                **self.run_params(), "prompts_used": {h: p.display_path for h, p in used.items()}}


@dataclass
class _Keyed:
    """One run's rows rendered and keyed: what the cache already holds and what is still to call."""

    items: list[tuple[Any, PromptTemplate, list[dict], str]]    # row, prompt, messages, key (in row order)
    requests: dict[str, str]                                    # key -> stored request JSON
    found: dict[str, CallRecord]                                # key -> stored reply
    pending: dict[str, tuple[PromptTemplate, list[dict]]]      # key -> (prompt, messages): the calls to make
    retried: set[str] = field(default_factory=set)              # pending keys that failed in an earlier run

    def pending_rows(self) -> list:
        """The first row asking each key still to call, in row order."""
        seen: set[str] = set()
        out = []
        for row, _, _, key in self.items:
            if key in self.pending and key not in seen:
                seen.add(key)
                out.append(row)
        return out

    def asked(self) -> dict[str, list[tuple[Any, PromptTemplate]]]:
        """key -> (row, prompt) of every row that asked it (a repeated row is one call, several outcomes)."""
        by_key: dict[str, list[tuple[Any, PromptTemplate]]] = {}
        for row, prompt, _, key in self.items:
            by_key.setdefault(key, []).append((row, prompt))
        return by_key


@dataclass
class _Delivery:
    """The plan's `deliver(key, record, fresh)`: the result to every row that asked for it: parse -> the stage's
    `record` (its own write transaction) -> the report's counts -> `on_result`. Outcomes of calls made in this
    run (`fresh`) are counted for the guard's failure-rate stop, except those of keys that failed in an earlier
    run (`retried`: counted apart, in `report.failed_again`); stored replies never are. Every row whose call in
    this run failed is named in `report.failing` (the first FAILING_KEPT), with an excerpt of its raw reply."""

    stage: LLMStage
    ws: Workspace
    run: StageRun
    report: RunReport
    guard: RunGuard
    on_result: Callable[[Outcome], None] | None
    asked: dict[str, list[tuple[Any, PromptTemplate]]]
    retried: set[str] = field(default_factory=set)

    def _note(self, msg: str) -> None:
        if len(self.report.errors) < 10:
            self.report.errors.append(msg)

    def _count(self, key: str, row: Any, rec: CallRecord, error: str | None) -> None:
        """One outcome of a call made in this run: towards the failure-rate stop unless its key failed before."""
        report, again = self.report, key in self.retried
        if again:
            report.retried += 1
            report.failed_again += error is not None
        else:
            self.guard.count(error is not None)
        report.failed_rows += error is not None
        if error is not None and len(report.failing) < FAILING_KEPT:
            raw = " ".join((rec.raw_text or "").split())
            report.failing.append({"row": self.stage.row_label(row), "key": key, "again": again, "error": error,
                                   "reply": raw[:80] + ("..." if len(raw) > 80 else "")})

    def __call__(self, key: str, rec: CallRecord | None, fresh: bool) -> None:
        report = self.report
        for row, prompt in self.asked[key]:
            oc = Outcome(row=row, key=key, prompt=prompt, record=rec, fresh=fresh)
            if rec is None:
                report.not_run += 1
            elif not rec.ok:
                oc.error = rec.error or "call failed"
                report.call_failed += 1
                self._note(oc.error)
            else:
                oc.value, oc.error = self.stage.parse_or_reason(rec.raw_text or "", row)
                if oc.error is None:
                    report.ok += 1
                else:
                    report.parse_failed += 1
                    self._note(f"parse: {oc.error}")
                with self.ws.store.write():
                    self.stage.record(self.ws, oc, self.run)
            if fresh and rec is not None:
                self._count(key, row, rec, oc.error)
            if self.on_result is not None:
                self.on_result(oc)


def why_text(reasons: dict[str, int]) -> str:
    """'150 task type text changed, 54 new': the calls of a dry run by the change that makes them."""
    return ", ".join(f"{n:,} {why}" for why, n in reasons.items())


def reparse(ws: Workspace, stage: LLMStage, rows: Iterable | None = None, *, endpoint: str | Endpoint | None = None,
            on_result: Callable[[Outcome], None] | None = None) -> RunReport:
    """Parse stored raw replies again (after a parser change) and record them; calls nothing."""
    return stage.run(ws, rows, endpoint=endpoint, on_result=on_result, cache_only=True, progress=False)
