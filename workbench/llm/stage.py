"""LLMStage and `run_stage`: run a prompt over many rows through the cache, limits and retries.

A stage subclasses `LLMStage` and supplies `context(row)` (template variables), optionally
`images(row)` (data URLs) and `prompt_for(row)`, and `parse(raw, row)` returning fields or a
`ParseError(reason)`. `run_stage` renders every row, looks all keys up in the cache, reports a
dry run if asked, then calls only what is missing with bounded concurrency on an asyncio loop in
a worker thread. Each answer is committed to `llm_calls` the moment it arrives (main thread),
then parsed and handed to `on_result(outcome)`; cached answers go through the same path, so a
re-run after a parser change re-parses stored raw text and calls nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from workbench.errors import WorkbenchError
from workbench.llm.cache import CallCache, CallRecord, request_json
from workbench.llm.client import Endpoint, make_client, resolve_endpoint
from workbench.llm.cost import cost_usd, estimate_prompt_tokens
from workbench.llm.prompts import PromptTemplate

DEFAULT_OUTPUT_TOKENS = 256


@dataclass
class ParseError:
    """What `parse` returns (or raises as ParseFailure) when a reply cannot be used."""

    reason: str


class ParseFailure(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class LLMStage:
    """Subclass and set `stage`, `prompt` (a PromptTemplate) and `params`; implement `context` and `parse`."""

    stage: str = "llm"
    prompt: PromptTemplate | None = None
    params: dict = {}                  # sampling params sent with every call (temperature, max_tokens, ...)
    expected_output_tokens: int = DEFAULT_OUTPUT_TOKENS   # for dry-run estimates when max_tokens is unset

    def prompt_for(self, row) -> PromptTemplate:
        if self.prompt is None:
            raise WorkbenchError(f"stage {self.stage!r} has no prompt template")
        return self.prompt

    def context(self, row) -> dict:
        return dict(row) if isinstance(row, dict) else {"row": row}

    def images(self, row) -> list[str]:
        return []

    def render(self, row) -> list[dict]:
        return self.prompt_for(row).render(images=self.images(row), **self.context(row))

    def parse(self, raw: str, row) -> Any:
        return raw


@dataclass
class Outcome:
    row: Any
    key: str
    prompt: PromptTemplate
    record: CallRecord | None          # None: not called (stopped, or dry run / cache-only miss)
    value: Any = None                  # what parse returned (when ok)
    error: str | None = None           # call error or parse failure reason

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
    cost_usd: float = 0.0
    est_prompt_tokens: int = 0
    est_completion_tokens: int = 0
    est_cost_usd: float = 0.0
    stopped: str | None = None          # why the run stopped early ('budget ...', 'failure rate ...')
    dry_run: bool = False
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)   # a sample of error messages

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    def summary(self) -> str:
        if self.dry_run:
            return (f"dry run ({self.stage}, {self.model}): {self.rows} row(s), {self.cached} already answered, "
                    f"{self.to_call} call(s) to make, ~{self.est_prompt_tokens:,} input + "
                    f"~{self.est_completion_tokens:,} output tokens (estimate), ~${self.est_cost_usd:.4f}")
        s = (f"{self.stage} ({self.model}): {self.rows} row(s): {self.cached} from cache, {self.called} called; "
             f"{self.ok} ok, {self.call_failed} call failure(s), {self.parse_failed} parse failure(s)")
        if self.not_run:
            s += f", {self.not_run} not run"
        s += f"; {self.prompt_tokens:,}+{self.completion_tokens:,} tokens, ${self.cost_usd:.4f}, {self.seconds:.1f}s"
        if self.stopped:
            s += f"; STOPPED: {self.stopped}"
        return s


_BUDGET_STOP = "budget"


class _Budget:
    """Reserve an estimate before each call; settle with the real cost. Thread-safe."""

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


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled or total == 0, leave=False, unit="call")


def run_stage(ws, stage: LLMStage, rows: Iterable, *, endpoint: str | Endpoint | None = None,
              on_result: Callable[[Outcome], None] | None = None, dry_run: bool = False,
              budget_usd: float | None = None, max_failure_rate: float | None = None,
              cache_only: bool = False, run_id: int | None = None, progress: bool | None = None,
              prompt_file: str | None = None, prompt_hash: str | None = None,
              refresh_failed: bool = False) -> RunReport:
    """Run `stage` over `rows`. See the module docstring and ARCHITECTURE.md ("The LLM seam").

    refresh_failed: call again where the cached reply does not parse (the new reply replaces it).
    """
    t0 = time.monotonic()
    ep = endpoint if isinstance(endpoint, Endpoint) else resolve_endpoint(ws.config, endpoint or "default")
    limits = ws.config.limits
    budget_usd = limits.budget_usd if budget_usd is None else budget_usd
    max_failure_rate = limits.max_failure_rate if max_failure_rate is None else max_failure_rate
    progress = limits.progress if progress is None else progress
    params = dict(stage.params)
    cache = CallCache(ws.store)

    # 1. Render and key every row (one call per distinct key).
    items = []
    requests: dict[str, str] = {}      # key -> stored request JSON (computed once: it is also the key's input)
    for row in rows:
        prompt = stage.prompt_for(row)
        messages = prompt.render(images=stage.images(row), **stage.context(row))
        req = request_json(ep.model, messages, params)
        items.append((row, prompt, messages, hashlib.sha256(req.encode()).hexdigest()))
        requests[items[-1][3]] = req
    report = RunReport(stage=stage.stage, endpoint=ep.name, model=ep.model, rows=len(items), dry_run=dry_run)
    found = cache.get_many(k for *_, k in items)
    if refresh_failed:
        for row, _, _, key in items:
            rec = found.get(key)
            if rec is not None and _parse_fails(stage, rec, row):
                del found[key]
    pending: dict[str, tuple] = {}
    for row, prompt, messages, key in items:
        if key not in found and key not in pending:
            pending[key] = (prompt, messages)
    report.cached = sum(1 for *_, k in items if k in found)
    report.to_call = len(pending)
    # Expected reply length (the stage's estimate, capped by max_tokens): dry-run figures and budget reservations.
    out_tokens = min(params.get("max_tokens") or stage.expected_output_tokens, stage.expected_output_tokens)
    est = {k: estimate_prompt_tokens(m) for k, (_, m) in pending.items()}
    report.est_prompt_tokens = sum(est.values())
    report.est_completion_tokens = out_tokens * len(pending)
    report.est_cost_usd = cost_usd(ep.price, report.est_prompt_tokens, report.est_completion_tokens)
    if dry_run:
        report.seconds = time.monotonic() - t0
        return report

    own_run = run_id is None
    if own_run:
        first = items[0][1] if items else stage.prompt
        run_id = ws.start_run(stage.stage, {"endpoint": ep.name, "base_url": ep.base_url, "params": params,
                                            "rows": len(items)},
                              prompt_file=prompt_file or (first.display_path if first else None),
                              prompt_hash=prompt_hash or (first.hash if first else None), model=ep.model)
    report.run_id = run_id
    by_key: dict[str, list[tuple]] = {}
    for row, prompt, messages, key in items:
        by_key.setdefault(key, []).append((row, prompt))
    state = {"done": 0, "failed": 0}

    def deliver(key: str, rec: CallRecord | None) -> None:
        for row, prompt in by_key[key]:
            oc = Outcome(row=row, key=key, prompt=prompt, record=rec)
            if rec is None:
                report.not_run += 1
            elif not rec.ok:
                oc.error = rec.error or "call failed"
                report.call_failed += 1
                if len(report.errors) < 10:
                    report.errors.append(oc.error)
            else:
                try:
                    value = stage.parse(rec.raw_text or "", row)
                except ParseFailure as exc:
                    value = ParseError(exc.reason)
                if isinstance(value, ParseError):
                    oc.error = value.reason
                    report.parse_failed += 1
                    if len(report.errors) < 10:
                        report.errors.append(f"parse: {value.reason}")
                else:
                    oc.value = value
                    report.ok += 1
            if rec is not None:
                state["done"] += 1
                state["failed"] += oc.error is not None
            if on_result is not None:
                on_result(oc)

    status = "done"
    try:
        for key in dict.fromkeys(k for *_, k in items):
            if key in found:
                deliver(key, found[key])
        if cache_only:
            for key in pending:
                deliver(key, None)
        elif pending:
            _call_all(ws, stage, ep, params, pending, requests, est, out_tokens, cache, report, deliver, state,
                      budget_usd, max_failure_rate, progress, run_id)
        if report.stopped:
            status = "stopped"
    except BaseException:
        status = "failed"
        raise
    finally:
        report.seconds = time.monotonic() - t0
        if own_run:
            ws.finish_run(run_id, status, report.as_dict())
    return report


def _call_all(ws, stage, ep, params, pending, requests, est, out_tokens, cache, report, deliver, state, budget_usd,
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
                wanted = cost_usd(ep.price, est[key], out_tokens)
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
                rec.key, rec.stage, rec.stage_run_id = key, stage.stage, run_id
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

    from workbench.workspace import utcnow

    thread = threading.Thread(target=runner, daemon=True, name=f"llm-{stage.stage}")
    thread.start()
    bar = _progress(len(pending), f"{stage.stage} ({ep.model})", progress)
    try:
        finished = False
        while not finished:
            # Everything that has arrived is committed in one transaction, before it is used.
            batch = [results.get()]
            while len(batch) < 512:
                try:
                    batch.append(results.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is DONE:
                finished = True
                batch.pop()
            for key, rec, _ in batch:
                if key == "__error__":
                    raise rec
            answered = [rec for _, rec, _ in batch if rec is not None]
            now = utcnow()
            for rec in answered:
                rec.created_at = now
            if answered:
                cache.put_many(answered)
            for key, rec, _ in batch:
                if rec is not None:
                    report.called += 1
                    report.prompt_tokens += rec.prompt_tokens or 0
                    report.completion_tokens += rec.completion_tokens or 0
                    report.cost_usd += rec.cost_usd or 0.0
                deliver(key, rec)
                if (not stop.is_set() and state["done"] >= min_calls
                        and state["failed"] / state["done"] > max_failure_rate):
                    stop.set()
                    report.stopped = (f"failure rate {state['failed']}/{state['done']} is over "
                                      f"{max_failure_rate:.0%}; first errors: {report.errors[:3]}")
            bar.update(len(answered))
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


def _parse_fails(stage: LLMStage, rec: CallRecord, row) -> bool:
    try:
        return isinstance(stage.parse(rec.raw_text or "", row), ParseError)
    except ParseFailure:
        return True


def reparse(ws, stage: LLMStage, rows: Iterable, *, endpoint: str | Endpoint | None = None,
            on_result: Callable[[Outcome], None] | None = None) -> RunReport:
    """Parse stored raw replies again (after a parser change); calls nothing."""
    return run_stage(ws, stage, rows, endpoint=endpoint, on_result=on_result, cache_only=True, progress=False)


def stored_json(rec: CallRecord) -> Any:
    return json.loads(rec.raw_response) if rec.raw_response else None
