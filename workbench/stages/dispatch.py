"""Where a stage's work runs: the engine in effect, and the one seam every LLM call goes through.

The seam is plan -> guard -> dispatcher -> deliver:

- `LLMStage.run` (stages/base.py) renders and keys its rows, serves what the cache holds, and builds one
  `CallPlan`: the calls still to make (key -> prompt, messages), their stored request JSON and token estimates,
  endpoint, sampling params, price, run id, report, a `RunGuard` and the stage's `deliver(key, record, fresh)`.
- `RunGuard` is the run's one set of stops: the budget (`_Budget`: reserve an estimate before a call, settle with
  the real cost), the failure rate of the calls made in this run, and the one wording of each stop message.
- `pick(...)` chooses the one `Dispatcher` that makes the calls: `CacheOnly` (reparse: nothing is called),
  `BatchDispatcher` (the OpenAI Batch API, llm/batch.py), the engine in effect (e.g. `workbench.engine.RayEngine`,
  whose workers call and return CallRecords), else `LocalDispatcher` (asyncio in a worker thread).
- Every dispatcher stamps each record with the one `stamp` (key, stage, run, prompt, request, created_at) and
  commits it to `llm_calls` before anything is parsed (a kill loses only calls still in flight), then hands it
  to `plan.arrived` (tally, then `deliver`: parse -> the stage's `record` -> counts).

The engine in effect is a context variable: `None` is the local engine (this process). An engine from a higher
layer (`workbench.engine`, e.g. Ray) is set with `using(engine)` around a command, so stages reached through
helper functions (run_filter, run_referees, ...) pick it up from `current()` without every signature growing a
parameter. Stages depend only on this seam, never on an engine's module: an engine plugs in by implementing
`Dispatcher` (LLM calls) beside its embedding and matching kernels.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from workbench.core.clock import utcnow
from workbench.core.workspace import Workspace
from workbench.llm.batch import BatchRunner
from workbench.llm.cache import CallCache, CallRecord
from workbench.llm.client import Endpoint, make_client
from workbench.llm.cost import Price, cost_usd
from workbench.llm.prompts import PromptTemplate

__all__ = ["BatchDispatcher", "CacheOnly", "CallPlan", "Dispatcher", "LocalDispatcher", "RunGuard", "current",
           "pick", "stamp", "using"]

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("workbench_engine", default=None)


def current() -> Any:
    """The engine set by `using` (None: local)."""
    return _current.get()


@contextlib.contextmanager
def using(engine: Any) -> Iterator[Any]:
    token = _current.set(engine)
    try:
        yield engine
    finally:
        _current.reset(token)


# -- the record stamp -------------------------------------------------------------------------------
def stamp(rec: CallRecord, *, key: str, stage: str, run_id: int | None, request: str, prompt_file: str | None,
          prompt_hash: str | None, at: str) -> CallRecord:
    """Make a client's record a cache row of this run: what every dispatcher (and the Batch API's ingest, which
    gets this function passed in) writes on a record before committing it."""
    rec.key, rec.stage, rec.stage_run_id, rec.request = key, stage, run_id, request
    rec.prompt_file, rec.prompt_hash, rec.created_at = prompt_file, prompt_hash, at
    return rec


# -- the run guard ----------------------------------------------------------------------------------
def budget_stop(limit: float, spent: float, est: float, calls: int = 1) -> str:
    nxt = "the next call" if calls == 1 else f"the next {calls} call(s)"
    return (f"budget ${limit:.4f}: spent ${spent:.4f}, and {nxt} (estimated ${est:.4f}) would go over it; "
            "raise --budget or limits.budget_usd and run again to go on")


def batch_budget_stop(limit: float, submitted: float) -> str:
    return (f"budget ${limit:.4f}: submitted the requests estimated to fit (~${submitted:.4f} at batch price); "
            "raise --budget and run again for the rest")


def failure_rate_stop(failed: int, done: int, max_rate: float, errors: list[str]) -> str:
    return f"failure rate {failed}/{done} of this run's calls is over {max_rate:.0%}; first errors: {errors[:3]}"


class _Budget:
    """Reserve an estimate before each call; settle with the real cost. Thread-safe. Unknown prices cost 0."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.spent = 0.0
        self.reserved = 0.0
        self.lock = threading.Lock()
        self.calls = 0

    def try_reserve(self, est: float, *, mean_floor: bool = True) -> float | None:
        """The amount reserved (the estimate, or with `mean_floor` the mean real cost so far if higher), or
        None: over budget."""
        with self.lock:
            if mean_floor and self.calls:
                est = max(est, self.spent / self.calls)
            if self.limit is not None and self.spent + self.reserved + est > self.limit:
                return None
            self.reserved += est
            return est

    def settle(self, reserved: float, actual: float, calls: int = 1) -> None:
        with self.lock:
            self.reserved -= reserved
            self.spent += actual
            self.calls += calls


_BUDGET = object()     # a budget stop not worded yet (local: worded once the calls in flight settle)


class RunGuard:
    """The stops of one stage run, whichever dispatcher makes its calls; the first stop wins.

    Budget: `reserve` before a call (or a Ray task's calls), `settle` with the real cost; the Batch API asks
    `fits` per request. Failure rate: `deliver` counts every outcome of a call made in this run, and
    `check_failure_rate` stops once more than `max_failure_rate` of them failed (after `min_calls`); stored
    replies never count. `stopped` (an Event) tells calls not yet made to stay unmade; `reason()` is the wording.
    """

    def __init__(self, budget_usd: float | None, max_failure_rate: float, min_calls: int) -> None:
        self.budget = _Budget(budget_usd)
        self.max_failure_rate = max_failure_rate
        self.min_calls = min_calls
        self.done = 0                  # outcomes of this run's calls (one per row that asked)
        self.failed = 0                # ... whose call failed or whose reply did not parse
        self.event = threading.Event()
        self._why: object = None       # None, _BUDGET (not worded yet) or the stop's wording
        self._refused: tuple[float, int] = (0.0, 1)   # estimate and calls of the first reservation refused
        self._lock = threading.Lock()

    @property
    def stopped(self) -> bool:
        return self.event.is_set()

    def _halt(self, why: object) -> bool:
        with self._lock:
            if self._why is not None:
                return False
            self._why = why
            self.event.set()
            return True

    def abort(self) -> None:
        """No more calls, with no reason of the guard's: the run failed or was interrupted."""
        self.event.set()

    def reserve(self, est: float, *, calls: int = 1, mean_floor: bool = True) -> float | None:
        """Reserve `est` for the next `calls` call(s): the amount reserved, or None: over budget, the run stops."""
        got = self.budget.try_reserve(est, mean_floor=mean_floor)
        if got is None and self._halt(_BUDGET):
            self._refused = (est, calls)
        return got

    def settle(self, reserved: float, actual: float, *, calls: int = 1) -> None:
        self.budget.settle(reserved, actual, calls)

    def fits(self, est: float) -> bool:
        """Batch API: reserve one request's estimate; False (the run stops) for the first one that does not fit."""
        if self.budget.try_reserve(est) is not None:
            return True
        self._halt(batch_budget_stop(self.budget.limit or 0.0, self.budget.reserved))
        return False

    def count(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed

    def check_failure_rate(self, errors: list[str]) -> bool:
        """Stop if this run's calls fail too often; True: stopped now."""
        if self.stopped or self.done < self.min_calls or self.failed / self.done <= self.max_failure_rate:
            return False
        return self._halt(failure_rate_stop(self.failed, self.done, self.max_failure_rate, errors))

    def reason(self) -> str | None:
        """Why the run stopped (None: it did not). A budget stop is worded when first asked, with what was spent
        by then: the local dispatcher asks once its calls in flight settled, Ray when the budget refused."""
        with self._lock:
            if self._why is _BUDGET:
                est, calls = self._refused
                self._why = budget_stop(self.budget.limit or 0.0, self.budget.spent, est, calls)
            return self._why if isinstance(self._why, str) else None


# -- the call plan ----------------------------------------------------------------------------------
class Report(Protocol):
    """What a dispatcher touches of the stage's RunReport."""

    errors: list[str]
    not_run: int

    def tally(self, rec: CallRecord) -> None: ...


Deliver = Callable[[str, CallRecord | None, bool], None]   # key, record (None: not called), made in this run


@dataclass
class CallPlan:
    """The calls one stage run still has to make, and everything a dispatcher needs to make them. Built once by
    `LLMStage.run`; dispatchers read it and report back only through `commit`, `arrived` and `not_run`."""

    ws: Workspace
    stage: str
    endpoint: Endpoint
    params: dict[str, Any]                                      # sampling params sent with every call
    pending: dict[str, tuple[PromptTemplate, list[dict]]]      # key -> (prompt, rendered messages)
    requests: dict[str, str]                                    # key -> stored request JSON (the key's input)
    est_tokens: dict[str, int]                                  # key -> estimated prompt tokens
    out_tokens: int                                             # expected reply tokens per call
    price: Price | None                                         # this run's price (batch price with the Batch API)
    run_id: int | None
    guard: RunGuard
    report: Report
    deliver: Deliver
    progress: bool = False
    cache: CallCache = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.cache = CallCache(self.ws.store)

    def est_cost(self, key: str) -> float:
        """One call's estimated cost at this run's price (0 when the price is unknown)."""
        return cost_usd(self.price, self.est_tokens[key], self.out_tokens) or 0.0

    def call_tokens(self, key: str) -> int:
        """The tokens one call is expected to use (the client's token-rate limiter)."""
        return self.est_tokens[key] + self.out_tokens

    def commit(self, got: list[tuple[str, CallRecord]]) -> None:
        """Stamp and commit records that reached this process, in one transaction, before any is parsed."""
        if not got:
            return
        now = utcnow()
        for key, rec in got:
            prompt = self.pending[key][0]
            stamp(rec, key=key, stage=self.stage, run_id=self.run_id, request=self.requests[key],
                  prompt_file=prompt.display_path, prompt_hash=prompt.hash, at=now)
        self.cache.put_many([rec for _, rec in got])

    def arrived(self, key: str, rec: CallRecord | None, fresh: bool = True) -> None:
        """A key's result in this run (None: not called): counted in the report, then delivered."""
        if rec is not None:
            self.report.tally(rec)
        self.deliver(key, rec, fresh)

    def not_run(self, keys: Iterable[str]) -> None:
        """Keys left uncalled (a stop, cache-only): delivered as not run."""
        for key in keys:
            self.deliver(key, None, False)

    def check_failure_rate(self) -> bool:
        return self.guard.check_failure_rate(self.report.errors)


# -- the dispatchers --------------------------------------------------------------------------------
class Dispatcher(Protocol):
    """Makes a plan's calls: stamps and commits each record as it arrives, then `plan.arrived` (or `not_run`)
    for every pending key, honouring `plan.guard`. `name` is what `stage_runs.params` records of an engine."""

    name: str

    def dispatch(self, plan: CallPlan) -> None: ...


class CacheOnly:
    """`reparse`: nothing is called; every key without a stored reply is delivered as not run."""

    name = "cache"

    def dispatch(self, plan: CallPlan) -> None:
        plan.not_run(plan.pending)


class BatchDispatcher:
    """The OpenAI Batch API instead of live calls (llm/batch.py): the requests that fit the budget are submitted,
    results arrive per finished batch, stamped (with `stamp`) and committed by the runner, then delivered."""

    name = "batch"

    def dispatch(self, plan: CallPlan) -> None:
        runner = BatchRunner(plan.ws, plan.stage, plan.endpoint, plan.run_id, progress=plan.progress, stamp=stamp)
        runner.run(plan.pending, plan.requests, plan.params,
                   lambda key, rec: plan.arrived(key, rec, fresh=rec is not None),
                   fits=lambda key: plan.guard.fits(plan.est_cost(key)))


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # third-party, only when a local run starts

    return tqdm(total=total, desc=desc, disable=not enabled or total == 0, leave=False, unit="call")


_DONE = object()       # the calling thread has finished
_ERROR = object()      # (_ERROR, exception): the calling thread failed; raised in the dispatching thread


class LocalDispatcher:
    """Calls from this process: an asyncio loop in a worker thread makes them (bounded concurrency, the client's
    rate limits and retries); this thread commits every reply that has arrived, then delivers them one by one."""

    name = "local"

    def dispatch(self, plan: CallPlan) -> None:
        results: queue.Queue[Any] = queue.Queue()
        thread = threading.Thread(target=_call_in_thread, args=(plan, results), daemon=True,
                                  name=f"llm-{plan.stage}")
        thread.start()
        inbox = _Inbox(plan, results, _progress(len(plan.pending), f"{plan.stage} ({plan.endpoint.model})",
                                                 plan.progress))
        try:
            while not inbox.finished or inbox.waiting:
                inbox.absorb(block=not inbox.waiting and not inbox.finished)
                if not inbox.waiting:
                    continue
                key, rec = inbox.waiting.popleft()
                plan.arrived(key, rec)
                plan.check_failure_rate()
        except BaseException:
            plan.guard.abort()
            raise
        finally:
            inbox.bar.close()
            thread.join(timeout=5)


class _Inbox:
    """The replies the calling thread put on the queue, committed as soon as this thread sees them."""

    def __init__(self, plan: CallPlan, results: queue.Queue[Any], bar: Any) -> None:
        self.plan, self.results, self.bar = plan, results, bar
        self.finished = False
        self.waiting: collections.deque[tuple[str, CallRecord | None]] = collections.deque()  # committed, not parsed

    def absorb(self, block: bool) -> None:
        """Commit every reply that has arrived, in one transaction, before anything is parsed: a kill loses only
        calls still in flight, never a reply that reached this process."""
        got = []
        if block:
            got.append(self.results.get())
        while True:
            try:
                got.append(self.results.get_nowait())
            except queue.Empty:
                break
        if got and got[-1] is _DONE:
            self.finished = True
            got.pop()
        for key, value in got:
            if key is _ERROR:
                raise value
        answered = [(key, rec) for key, rec in got if rec is not None]
        if answered:
            self.plan.commit(answered)
            self.bar.update(len(answered))
        self.waiting.extend(got)


def _call_in_thread(plan: CallPlan, results: queue.Queue[Any]) -> None:
    try:
        asyncio.run(_call_each(plan, results))
    except BaseException as exc:  # surfaced in the dispatching thread
        results.put((_ERROR, exc))
    finally:
        results.put(_DONE)


async def _call_each(plan: CallPlan, results: queue.Queue[Any]) -> None:
    """Every pending call, at most `max_concurrency` at once; each reserves its estimate first (the budget) and
    puts (key, record) on the queue, or (key, None) once the guard stopped the run."""
    guard = plan.guard
    client = make_client(plan.endpoint)
    sem = asyncio.Semaphore(plan.endpoint.config.max_concurrency)

    async def one(key: str, messages: list[dict]) -> None:
        async with sem:
            if guard.stopped:
                results.put((key, None))
                return
            reserved = guard.reserve(plan.est_cost(key))
            if reserved is None:
                results.put((key, None))
                return
            try:
                rec = await client.complete(messages, plan.params, est_tokens=plan.call_tokens(key))
            except Exception as exc:  # a bug or an unexpected client error: record it, keep going
                rec = client._record("error", error=f"{type(exc).__name__}: {exc}")
            guard.settle(reserved, rec.cost_usd or 0.0)
            results.put((key, rec))

    try:
        await asyncio.gather(*(one(k, m) for k, (_, m) in plan.pending.items()))
    finally:
        await client.close()


CACHE_ONLY, BATCH, LOCAL = CacheOnly(), BatchDispatcher(), LocalDispatcher()


def pick(*, cache_only: bool, batch: bool, engine: Dispatcher | None) -> Dispatcher:
    """Where a plan's calls go: nowhere (cache only), the Batch API, the engine in effect, or this process."""
    if cache_only:
        return CACHE_ONLY
    if batch:
        return BATCH
    return engine if engine is not None else LOCAL
