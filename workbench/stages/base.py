"""The stage contract: a stage names its rows and records each outcome; the base owns everything else.

    class Stage:      name, execute(ws, run) -> report            (embed, match, select, export)
    class LLMStage:   name, rows(ws), prompt_for/context/images,  (expand, filter, qa, referee)
                      parse(raw, row) [raise ParseFailure], record(ws, outcome, run)

`Stage.run(ws)` and `LLMStage.run(ws, ...)` are the base's and cannot be overridden (`__init_subclass__`
refuses): they open the stage-run record (`pipeline/runs.py`: one writer per stage, final status done /
stopped / failed / interrupted), and for LLM stages run the loop

    rows → render → key → one batched cache lookup → (dry run: calls, tokens, cost) → cached replies parsed →
    missing keys called (bounded concurrency, rate limits, retries) → each reply committed to `llm_calls` the
    moment it arrives → parse → record(outcome) in its own transaction → failure-rate and budget stops.

A parse failure is one exception, `ParseFailure(reason)`; the base counts it and passes the outcome to
`record` with `outcome.error` set, so the stage keeps the dropped row and its reason beside the kept ones
(the raw reply stays in `llm_calls`). A failed *call* is never passed to `record`: nothing was decided and
the next run calls again. Only calls made in this run count towards the failure-rate stop: stored replies
that do not parse are reported, not held against the endpoint (`--refresh-failed` asks for them again).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from workbench.core.clock import utcnow
from workbench.core.errors import ParseFailure, WorkbenchError
from workbench.core.runs import StageRun
from workbench.llm.batch import BatchRunner, batch_price, check_endpoint
from workbench.llm.cache import CallCache, CallRecord, request_json
from workbench.llm.client import Endpoint, make_client, redact_url, resolve_endpoint
from workbench.llm.cost import cost_usd, estimate_prompt_tokens
from workbench.llm.prompt_store import remember
from workbench.llm.prompts import PromptTemplate
from workbench.stages.dispatch import current

__all__ = ["Stage", "LLMStage", "ParseFailure", "Outcome", "RunReport", "StageRun"]

DEFAULT_OUTPUT_TOKENS = 256
_FINAL = ("run",)


def _public_url(url: str | None) -> str | None:
    """The base URL as stored in `stage_runs.params`: credentials in it are never written."""
    return redact_url(url) if url else url


class Stage:
    """A pipeline stage. Subclasses set `name` and implement `execute(ws, run)`; `run(ws)` is the base's."""

    name: str = ""

    def __init_subclass__(cls, **kw):
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

    def check(self, ws) -> None:
        """Raise a WorkbenchError if the stage cannot run (missing inputs); called before any run record."""

    def execute(self, ws, run: StageRun):
        raise NotImplementedError

    def run(self, ws):
        self.check(ws)
        with ws.stage_run(self.name, self.run_params(), lock_key=self.lock_key, **self.provenance()) as run:
            report = self.execute(ws, run)
            summary = asdict(report) if is_dataclass(report) else dict(report or {})
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

    def as_dict(self) -> dict:
        return dict(self.__dict__)

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
                    + (" at batch price" if self.batch and self.to_call else ""))
        s = (f"{self.stage} ({self.model}): {self.rows} row(s): {self.cached} from cache, {self.called} called; "
             f"{self.ok} ok, {self.call_failed} call failure(s), {self.parse_failed} parse failure(s)")
        if self.not_run:
            s += f", {self.not_run} not run"
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

    # -- what a stage supplies ---------------------------------------------------------------------
    def rows(self, ws) -> list:
        raise WorkbenchError(f"stage {self.name!r}: no rows given")

    def prompt_for(self, row) -> PromptTemplate:
        if self.prompt is None:
            raise WorkbenchError(f"stage {self.name!r} has no prompt template")
        return self.prompt

    def context(self, row) -> dict:
        return dict(row) if isinstance(row, dict) else {"row": row}

    def images(self, row) -> list[str]:
        return []

    def parse(self, raw: str, row) -> Any:
        """The fields a reply gives, or `raise ParseFailure(reason)`."""
        return raw

    def record(self, ws, outcome: Outcome, run: StageRun) -> None:
        """Write what one reply decided (parsed or not: `outcome.error` holds a parse failure's reason).
        Runs inside a write transaction; count things with `run.counts`."""

    # -- helpers -----------------------------------------------------------------------------------
    def render(self, row) -> list[dict]:
        return self.prompt_for(row).render(images=self.images(row), **self.context(row))

    def parse_or_reason(self, raw: str, row) -> tuple[Any, str | None]:
        try:
            return self.parse(raw, row), None
        except ParseFailure as exc:
            return None, exc.reason or "unreadable reply"

    # -- the loop (the base's) ---------------------------------------------------------------------
    def run(self, ws, rows: Iterable | None = None, *, endpoint: str | Endpoint | None = None,
            on_result: Callable[[Outcome], None] | None = None, dry_run: bool = False,
            budget_usd: float | None = None, max_failure_rate: float | None = None, cache_only: bool = False,
            progress: bool | None = None, refresh_failed: bool = False, batch: bool | None = None,
            engine=None) -> RunReport:
        """Run the stage over `rows` (default: `self.rows(ws)`).

        on_result: also called with every outcome (after `record`), e.g. by a notebook.
        cache_only: parse stored replies, call nothing (`reparse`).
        refresh_failed: call again where the stored reply does not parse (the new reply replaces it).
        batch: send the missing calls through the OpenAI Batch API (`llm/batch.py`; default `[batch] enabled`):
        submitted, polled until done (a restarted run resumes polling), ingested into the same cache rows.
        engine: where the missing calls are made (`workbench/engine/`; default `workbench.engine.current()`):
        None/local here, or e.g. a RayEngine whose workers call and return CallRecords that this process commits
        and records exactly as local replies (same keys: a Ray run then a local one calls nothing twice).
        """
        t0 = time.monotonic()
        ep = endpoint or self.endpoint
        ep = ep if isinstance(ep, Endpoint) else resolve_endpoint(ws.config, ep or "default")
        limits = ws.config.limits
        budget_usd = limits.budget_usd if budget_usd is None else budget_usd
        max_failure_rate = limits.max_failure_rate if max_failure_rate is None else max_failure_rate
        progress = limits.progress if progress is None else progress
        batch = ws.config.batch.enabled if batch is None else batch
        if batch and not cache_only:
            check_endpoint(ep)
        if engine is None:
            engine = current()
        params = dict(self.params)
        cache = CallCache(ws.store)
        rows = list(self.rows(ws) if rows is None else rows)

        # 1. Render and key every row (one call per distinct key).
        items = []
        requests: dict[str, str] = {}      # key -> stored request JSON (computed once: it is also the key's input)
        for row in rows:
            prompt = self.prompt_for(row)
            messages = prompt.render(images=self.images(row), **self.context(row))
            req = request_json(ep.model, messages, params)
            key = hashlib.sha256(req.encode()).hexdigest()
            items.append((row, prompt, messages, key))
            requests[key] = req
        report = RunReport(stage=self.name, endpoint=ep.name, model=ep.model, rows=len(items), dry_run=dry_run,
                           produces=self.produces, batch=bool(batch and not cache_only))
        price = ep.price
        if report.batch:
            price = batch_price(ep.price, ws.config.batch.price_factor)
        found = cache.get_many(k for *_, k in items)
        if refresh_failed:
            for row, _, _, key in items:
                rec = found.get(key)
                if rec is not None and self.parse_or_reason(rec.raw_text or "", row)[1] is not None:
                    del found[key]
        pending: dict[str, tuple] = {}
        for _row, prompt, messages, key in items:
            if key not in found and key not in pending:
                pending[key] = (prompt, messages)
        report.cached = sum(1 for *_, k in items if k in found)
        report.to_call = 0 if cache_only else len(pending)
        # Expected reply length (the stage's estimate, capped by max_tokens): dry-run figures and budget.
        out_tokens = min(params.get("max_tokens") or self.expected_output_tokens, self.expected_output_tokens)
        est = {k: estimate_prompt_tokens(m) for k, (_, m) in pending.items()}
        report.est_prompt_tokens = sum(est.values())
        report.est_completion_tokens = out_tokens * len(pending)
        report.est_cost_usd = cost_usd(price, report.est_prompt_tokens, report.est_completion_tokens)
        if dry_run:
            report.seconds = time.monotonic() - t0
            return report

        first = items[0][1] if items else self.prompt
        run_params = {"endpoint": ep.name, "base_url": _public_url(ep.base_url), "params": params,
                      **({"pool": ep.public_urls} if ep.members else {}), **({"batch": True} if report.batch else {}),
                      "rows": len(items), **({"engine": engine.name} if engine is not None else {}),
                      **self.run_params()}
        used = {p.hash: p for _, p, _, _ in items}    # every template the rows use (expand: one per kind)
        run_params["prompts_used"] = {h: p.display_path for h, p in used.items()}
        with ws.stage_run(self.name, run_params, lock_key=self.lock_key, model=ep.model,
                          prompt_file=first.display_path if first else None,
                          prompt_hash=first.hash if first else None) as run:
            report.run_id = run.id
            remember(ws, used.values())   # each template's text, once by hash
            try:
                self._loop(ws, run, ep, params, items, found, pending, requests, est, out_tokens, cache, report,
                           on_result, cache_only, budget_usd, max_failure_rate, progress, engine)
            finally:
                report.counts = dict(run.counts)
                report.seconds = time.monotonic() - t0
                if report.stopped:
                    run.stop(report.stopped)
                run.summary.update(report.as_dict())
        return report

    def _loop(self, ws, run, ep, params, items, found, pending, requests, est, out_tokens, cache, report,
              on_result, cache_only, budget_usd, max_failure_rate, progress, engine=None) -> None:
        by_key: dict[str, list[tuple]] = {}
        for row, prompt, _, key in items:
            by_key.setdefault(key, []).append((row, prompt))
        fresh_stats = {"done": 0, "failed": 0}     # calls made in this run: the failure-rate stop's input

        def note_error(msg: str) -> None:
            if len(report.errors) < 10:
                report.errors.append(msg)

        def deliver(key: str, rec: CallRecord | None, fresh: bool) -> None:
            for row, prompt in by_key[key]:
                oc = Outcome(row=row, key=key, prompt=prompt, record=rec, fresh=fresh)
                if rec is None:
                    report.not_run += 1
                elif not rec.ok:
                    oc.error = rec.error or "call failed"
                    report.call_failed += 1
                    note_error(oc.error)
                else:
                    oc.value, oc.error = self.parse_or_reason(rec.raw_text or "", row)
                    if oc.error is None:
                        report.ok += 1
                    else:
                        report.parse_failed += 1
                        note_error(f"parse: {oc.error}")
                    with ws.store.write():
                        self.record(ws, oc, run)
                if fresh and rec is not None:
                    fresh_stats["done"] += 1
                    fresh_stats["failed"] += oc.error is not None
                if on_result is not None:
                    on_result(oc)

        for key in dict.fromkeys(k for *_, k in items):
            if key in found:
                deliver(key, found[key], False)
        if cache_only:
            for key in pending:
                deliver(key, None, False)
        elif pending and report.batch:
            _batch_all(ws, self, ep, params, pending, requests, est, out_tokens, report, deliver, budget_usd,
                       progress, run.id)
        elif pending and engine is not None:     # e.g. Ray workers call; this process commits and records
            engine.call_all(ws, self, ep, params, pending, requests, est, out_tokens, cache, report, deliver,
                            fresh_stats, budget_usd, max_failure_rate, progress, run.id)
        elif pending:
            _call_all(ws, self, ep, params, pending, requests, est, out_tokens, cache, report, deliver, fresh_stats,
                      budget_usd, max_failure_rate, progress, run.id)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled or total == 0, leave=False, unit="call")


_BUDGET_STOP = "budget"


class _Budget:
    """Reserve an estimate before each call; settle with the real cost. Thread-safe. Unknown prices cost 0."""

    def __init__(self, limit: float | None):
        self.limit = limit
        self.spent = 0.0
        self.reserved = 0.0
        self.lock = threading.Lock()
        self.calls = 0
        self.refused: float | None = None   # the estimate of the first call that did not fit

    def try_reserve(self, est: float) -> float | None:
        """The amount reserved (the estimate, or the mean real cost so far if higher), or None: over budget."""
        with self.lock:
            if self.calls:
                est = max(est, self.spent / self.calls)
            if self.limit is not None and self.spent + self.reserved + est > self.limit:
                return None
            self.reserved += est
            return est

    def settle(self, reserved: float, actual: float) -> None:
        with self.lock:
            self.reserved -= reserved
            self.spent += actual
            self.calls += 1


def _call_all(ws, stage, ep, params, pending, requests, est, out_tokens, cache, report, deliver, stats, budget_usd,
              max_failure_rate, progress, run_id) -> None:
    results: queue.Queue = queue.Queue()
    stop = threading.Event()
    budget = _Budget(budget_usd)
    min_calls = ws.config.limits.min_calls_before_failure_check
    DONE = object()

    async def main():
        client = make_client(ep)
        sem = asyncio.Semaphore(ep.config.max_concurrency)

        async def one(key, prompt, messages):
            async with sem:
                if stop.is_set():
                    results.put((key, None, 0.0))
                    return
                wanted = cost_usd(ep.price, est[key], out_tokens) or 0.0
                est_cost = budget.try_reserve(wanted)
                if est_cost is None:
                    stop.set()
                    budget.refused = budget.refused or wanted
                    report.stopped = report.stopped or _BUDGET_STOP   # worded once the calls in flight settle
                    results.put((key, None, 0.0))
                    return
                try:
                    rec = await client.complete(messages, params, est_tokens=est[key] + out_tokens)
                except Exception as exc:  # a bug or an unexpected client error: record it, keep going
                    rec = client._record("error", error=f"{type(exc).__name__}: {exc}")
                rec.key, rec.stage, rec.stage_run_id = key, stage.name, run_id
                rec.prompt_file, rec.prompt_hash = prompt.display_path, prompt.hash
                rec.request = requests[key]
                budget.settle(est_cost, rec.cost_usd or 0.0)
                results.put((key, rec, est_cost))

        try:
            await asyncio.gather(*(one(k, p, m) for k, (p, m) in pending.items()))
        finally:
            await client.close()

    def runner():
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced in the main thread
            results.put(("__error__", exc, 0.0))
        finally:
            results.put(DONE)

    thread = threading.Thread(target=runner, daemon=True, name=f"llm-{stage.name}")
    thread.start()
    bar = _progress(len(pending), f"{stage.name} ({ep.model})", progress)
    try:
        finished = False
        waiting: collections.deque = collections.deque()    # committed, not yet parsed and recorded

        def absorb(block: bool) -> None:
            """Commit every reply that has arrived, in one transaction, before anything is parsed: a kill loses
            only calls still in flight, never a reply that reached this process."""
            nonlocal finished
            got = []
            if block:
                got.append(results.get())
            while True:
                try:
                    got.append(results.get_nowait())
                except queue.Empty:
                    break
            if got and got[-1] is DONE:
                finished = True
                got.pop()
            for key, rec, _ in got:
                if key == "__error__":
                    raise rec
            answered = [rec for _, rec, _ in got if rec is not None]
            now = utcnow()
            for rec in answered:
                rec.created_at = now
            if answered:
                cache.put_many(answered)
                bar.update(len(answered))
            waiting.extend(got)

        while not finished or waiting:
            absorb(block=not waiting and not finished)
            if not waiting:
                continue
            key, rec, _ = waiting.popleft()
            if rec is not None:
                report.tally(rec)
            deliver(key, rec, True)
            if (not stop.is_set() and stats["done"] >= min_calls
                    and stats["failed"] / stats["done"] > max_failure_rate):
                stop.set()
                report.stopped = (f"failure rate {stats['failed']}/{stats['done']} of this run's calls is over "
                                  f"{max_failure_rate:.0%}; first errors: {report.errors[:3]}")
    except BaseException:
        stop.set()
        raise
    finally:
        bar.close()
        thread.join(timeout=5)
        if report.stopped == _BUDGET_STOP:
            report.stopped = (f"budget ${budget_usd:.4f}: spent ${budget.spent:.4f}, and the next call (estimated "
                              f"${budget.refused or 0:.4f}) would go over it; raise --budget or limits.budget_usd "
                              "and run again to go on")


def _batch_all(ws, stage, ep, params, pending, requests, est, out_tokens, report, deliver, budget_usd, progress,
               run_id) -> None:
    """The Batch API instead of live calls: results arrive per finished batch, already committed to
    `llm_calls` (llm/batch.py), then go through the same parse -> record as live replies."""
    runner = BatchRunner(ws, stage.name, ep, run_id, progress=progress)
    price = batch_price(ep.price, ws.config.batch.price_factor)

    def got(key: str, rec: CallRecord | None) -> None:
        if rec is not None:
            report.tally(rec)
        deliver(key, rec, rec is not None)

    stopped = runner.run(pending, requests, params, got, budget_usd=budget_usd,
                         est_cost=lambda k: cost_usd(price, est[k], out_tokens) or 0.0)
    if stopped:
        report.stopped = stopped


def reparse(ws, stage: LLMStage, rows: Iterable | None = None, *, endpoint: str | Endpoint | None = None,
            on_result: Callable[[Outcome], None] | None = None) -> RunReport:
    """Parse stored raw replies again (after a parser change) and record them; calls nothing."""
    return stage.run(ws, rows, endpoint=endpoint, on_result=on_result, cache_only=True, progress=False)
