"""The OpenAI Batch API behind the stage loop (`LLMStage.run(batch=True)`, CLI `--batch`).

The requests a stage still needs are written as JSONL (one line per cache key: `custom_id` = the key, the body
= model + messages + params exactly as a live call sends them), split at the provider's limits
(`[batch] max_requests_per_file`, `max_bytes_per_file`: OpenAI's 50,000 requests / 200 MB by default), uploaded
(`files.create(purpose="batch")`) and submitted (`batches.create(endpoint="/v1/chat/completions")`). Polling
reports the provider's states as they are (validating, in_progress, finalizing, completed, expired, failed,
cancelling, cancelled). Finished batches are downloaded and every line becomes an `llm_calls` row like a live
call's (raw text and response JSON kept, cost at `[batch] price_factor` x list price), so a later live run
finds them; the stage base then parses and records each one as usual.

Durability (table `llm_batches`, `llm_batch_requests` in llm/schema.py): a batch is written down *before* it
is submitted, with a random token sent as its metadata, so a process killed at any point is resumed, not
repeated: a restarted run finds its keys in a live batch and polls it; a batch whose id was never stored is
found by its token in `batches.list`; a batch is marked ingested in the same transaction that writes its
results. Lines that expired or failed without a reply are sent once more in a new batch (attempt 2, read back
from the uploaded input file); after that they are stored as failed calls, which the next run asks again.
Lines of a batch the user cancelled (`workbench batches WS --cancel ID`) are left for the next run.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.cache import CallCache, CallRecord
from workbench.llm.client import LLMClient, resolve_endpoint
from workbench.llm.cost import cost_usd

CHAT_URL = "/v1/chat/completions"
LIVE = ("submitting", "validating", "in_progress", "finalizing", "cancelling")
DONE = ("completed", "expired", "failed", "cancelled")


def batch_price(price, factor: float):
    return None if price is None else (price[0] * factor, price[1] * factor)


def check_endpoint(ep) -> None:
    if ep.config.kind != "openai" or ep.members:
        what = "a pool" if ep.members else f"kind {ep.config.kind!r}"
        raise WorkbenchError(f"endpoint {ep.name!r} is {what}: the Batch API (--batch) needs one OpenAI-compatible "
                             "endpoint that serves /v1/files and /v1/batches")


def openai_client(ep):
    import openai

    return openai.OpenAI(base_url=ep.base_url, api_key=ep.api_key(), timeout=ep.config.timeout_s,
                         max_retries=ep.config.max_retries)


def jsonl_line(key: str, model: str, messages: list[dict], params: dict) -> bytes:
    body = {"model": model, "messages": messages, **params}
    return (json.dumps({"custom_id": key, "method": "POST", "url": CHAT_URL, "body": body},
                       ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def split_lines(lines: list[tuple[str, bytes]], max_requests: int, max_bytes: int) -> list[list[tuple[str, bytes]]]:
    """Consecutive chunks of (key, line) within both limits; a single line over the byte limit is an error."""
    chunks: list[list[tuple[str, bytes]]] = []
    cur: list[tuple[str, bytes]] = []
    size = 0
    for key, line in lines:
        if len(line) > max_bytes:
            raise WorkbenchError(f"one request ({len(line):,} bytes, key {key[:12]}) is over [batch] "
                                 f"max_bytes_per_file = {max_bytes:,}; raise it or send smaller images")
        if cur and (len(cur) >= max_requests or size + len(line) > max_bytes):
            chunks.append(cur)
            cur, size = [], 0
        cur.append((key, line))
        size += len(line)
    if cur:
        chunks.append(cur)
    return chunks


@dataclass
class BatchRow:
    id: int
    token: str
    batch_id: str | None
    status: str
    attempt: int
    input_file_id: str | None
    n_requests: int


def _rows(store, where: str, params=()) -> list[BatchRow]:
    return [BatchRow(r["id"], r["token"], r["batch_id"], r["status"], r["attempt"], r["input_file_id"],
                     r["n_requests"])
            for r in store.query(f"SELECT * FROM llm_batches WHERE {where} ORDER BY id", params)]


class BatchRunner:
    """Submits, polls and ingests the batches of one stage run. `run(pending)` returns when every key it was
    given has a result (or is left for later: cancelled, over budget)."""

    def __init__(self, ws: Workspace, stage_name: str, ep, run_id: int | None, *, stamp: Callable[..., CallRecord],
                 progress: bool = False, say: Callable[[str], None] | None = None, client=None):
        check_endpoint(ep)
        self.ws, self.store, self.ep, self.stage, self.run_id = ws, ws.store, ep, stage_name, run_id
        # The stage seam's one record stamp (stages/dispatch.py `stamp`), passed in: this layer cannot import it.
        self.stamp = stamp
        self.cfg = ws.config.batch
        self.price = batch_price(ep.price, self.cfg.price_factor)
        self.client = client or openai_client(ep)
        self._reader = LLMClient(ep)      # turns a chat completion into a CallRecord, scrubbing secrets
        self.say = say or ((lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None))

    # -- submitting ----------------------------------------------------------------------------
    def live_batches_for(self, keys) -> dict[str, int]:
        """key -> llm_batches.id for keys already waiting in a batch not yet ingested."""
        out: dict[str, int] = {}
        keys = list(keys)
        for i in range(0, len(keys), 900):
            chunk = keys[i:i + 900]
            for r in self.store.query(
                    "SELECT q.key, q.batch FROM llm_batch_requests q JOIN llm_batches b ON b.id = q.batch "
                    f"WHERE q.outcome IS NULL AND b.ingested_at IS NULL AND q.key IN ({','.join('?' * len(chunk))})",
                    chunk):
                out[r["key"]] = r["batch"]
        return out

    def plan(self, lines: list[tuple[str, bytes, str, str | None, str | None]], attempt: int = 1) -> list[int]:
        """Write batches down before submitting them: lines = (key, jsonl, request, prompt_file, prompt_hash)."""
        meta = {k: (req, pf, ph) for k, _, req, pf, ph in lines}
        ids = []
        for chunk in split_lines([(k, line) for k, line, *_ in lines], self.cfg.max_requests_per_file,
                                 self.cfg.max_bytes_per_file):
            now = utcnow()
            with self.store.write() as c:
                cur = c.execute(
                    "INSERT INTO llm_batches(token, endpoint, model, stage, stage_run_id, attempt, status, n_requests, "
                    "bytes, created_at, updated_at) VALUES (?,?,?,?,?,?, 'submitting', ?,?,?,?)",
                    (uuid.uuid4().hex, self.ep.name, self.ep.model, self.stage, self.run_id, attempt, len(chunk),
                     sum(len(line) for _, line in chunk), now, now))
                bid = cur.lastrowid
                assert bid is not None  # sqlite3 sets lastrowid after a successful INSERT
                c.executemany("INSERT INTO llm_batch_requests(batch, key, request, prompt_file, prompt_hash) "
                              "VALUES (?,?,?,?,?)", [(bid, k, *meta[k]) for k, _ in chunk])
            self._pending_lines[bid] = b"".join(line for _, line in chunk)
            ids.append(bid)
        return ids

    def submit(self, row: BatchRow) -> None:
        """Upload and create a batch planned by this process (or whose file a killed one uploaded)."""
        if row.input_file_id is None:
            data = self._pending_lines.pop(row.id)
            f = self.client.files.create(file=(f"{self.stage.replace(':', '-')}-{row.id}.jsonl", data),
                                         purpose="batch")
            with self.store.write() as c:
                c.execute("UPDATE llm_batches SET input_file_id=?, updated_at=? WHERE id=?", (f.id, utcnow(), row.id))
            row.input_file_id = f.id
        b = self.client.batches.create(input_file_id=row.input_file_id, endpoint=CHAT_URL,
                                       completion_window=self.cfg.completion_window,
                                       metadata={"workbench": row.token, "stage": self.stage})
        self._update(row.id, b)
        self.say(f"batch {b.id}: submitted {row.n_requests:,} request(s) of {self.stage} (attempt {row.attempt}): "
                 f"{b.status.replace('_', ' ')}")

    def recover(self) -> None:
        """Batches a killed process planned but may not have submitted: adopt the provider's batch carrying
        the token; else keep one whose file was uploaded (it is created now); else forget it (its keys are
        planned again, nothing was sent)."""
        for row in _rows(self.store, "status='submitting' AND batch_id IS NULL AND endpoint=?", (self.ep.name,)):
            if row.id in self._pending_lines:
                continue
            found = self._find_by_token(row.token)
            if found is not None:
                self._update(row.id, found)
                self.say(f"batch {found.id}: found by its token (submitted by a process that stopped)")
            elif row.input_file_id is None:
                with self.store.write() as c:
                    c.execute("DELETE FROM llm_batches WHERE id=?", (row.id,))

    def _lines_of(self, row: BatchRow) -> bytes:
        return self.client.files.content(row.input_file_id).content

    def _find_by_token(self, token: str, *, look_at: int = 2000):
        """The provider's batch carrying our token among the account's most recent `look_at` (newest first)."""
        import itertools

        for b in itertools.islice(self.client.batches.list(limit=100), look_at):
            if (b.metadata or {}).get("workbench") == token:
                return b
        return None

    def _update(self, row_id: int, b) -> None:
        rc = b.request_counts
        errors = "; ".join(e.message or e.code or "" for e in (b.errors.data or [])) if b.errors else None
        with self.store.write() as c:
            c.execute("UPDATE llm_batches SET batch_id=?, status=?, input_file_id=coalesce(input_file_id, ?), "
                      "output_file_id=?, error_file_id=?, n_completed=?, n_failed=?, error=?, updated_at=? WHERE id=?",
                      (b.id, b.status, b.input_file_id, b.output_file_id, b.error_file_id,
                       rc.completed if rc else 0, rc.failed if rc else 0, errors or None, utcnow(), row_id))

    # -- results -------------------------------------------------------------------------------
    def _records(self, out_id: str | None, err_id: str | None) -> tuple[dict[str, CallRecord], dict[str, str]]:
        """(key -> record with a reply, key -> why there is none) from the output and error files."""
        from openai.types.chat import ChatCompletion

        got: dict[str, CallRecord] = {}
        why: dict[str, str] = {}
        for fid in (out_id, err_id):
            if not fid:
                continue
            for raw in self.client.files.content(fid).text.splitlines():
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                    key = line["custom_id"]
                except (ValueError, KeyError, TypeError):
                    continue   # not ours to place; the keys it would have answered stay without a result
                resp, err = line.get("response") or {}, line.get("error")
                body = resp.get("body") if isinstance(resp, dict) else None
                if resp.get("status_code") == 200 and isinstance(body, dict) and "choices" in body:
                    try:
                        rec = self._reader._from_response(ChatCompletion.model_validate(body), 1, None)
                    except Exception as exc:
                        why[key] = f"unreadable batch result: {type(exc).__name__}: {str(exc)[:200]}"
                        continue
                    rec.cost_usd = _cost(self.price, rec.prompt_tokens, rec.completion_tokens)
                    got[key] = rec
                else:
                    msg = (err or {}).get("message") if isinstance(err, dict) else None
                    if not msg and isinstance(body, dict):
                        msg = (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) else None
                    code = (err or {}).get("code") if isinstance(err, dict) else resp.get("status_code")
                    why[key] = f"batch line failed ({code}): {msg or 'no reply'}"
        return got, why

    def ingest(self, row: BatchRow, b) -> dict[str, CallRecord | None]:
        """Write a finished batch's results; plan attempt 2 for lines without a reply. Returns key -> record
        (None: no result now, e.g. cancelled or sent again)."""
        keys = {r["key"]: (r["request"], r["prompt_file"], r["prompt_hash"]) for r in self.store.query(
            "SELECT key, request, prompt_file, prompt_hash FROM llm_batch_requests WHERE batch=?", (row.id,))}
        batch_error = "; ".join(e.message or e.code or "" for e in (b.errors.data or [])) if b.errors else None
        got, why = self._records(b.output_file_id, b.error_file_id)
        now = utcnow()
        out: dict[str, CallRecord | None] = {}
        records, outcomes, again = [], [], []
        for key, (req, pf, ph) in keys.items():
            rec = got.get(key)
            if rec is None and b.status == "cancelled":
                outcomes.append(("cancelled", row.id, key))
                out[key] = None
                continue
            if rec is None and row.attempt == 1:
                again.append(key)
                outcomes.append(("resubmitted", row.id, key))
                out[key] = None
                continue
            if rec is None:
                reason = why.get(key) or (f"batch {b.status}" + (f": {batch_error}" if batch_error else "")
                                          + " with no reply for this request")
                rec = self._reader._record("error", error=f"{reason} (sent twice in a batch; the next run asks again)")
            self.stamp(rec, key=key, stage=self.stage, run_id=self.run_id, request=req, prompt_file=pf,
                       prompt_hash=ph, at=now)
            records.append(rec)
            outcomes.append(("ok" if rec.ok else "error", row.id, key))
            out[key] = rec
        lines = []
        if again:
            src = {}
            for raw in self._lines_of(row).splitlines(keepends=True):
                try:
                    src[json.loads(raw)["custom_id"]] = raw
                except (ValueError, KeyError, TypeError):
                    continue
            lines = [(k, src[k], *keys[k]) for k in again if k in src]

        with self.store.write() as c:
            # One transaction: results, outcomes, the retry's plan and "ingested" stand or fall together.
            CallCache(self.store).put_many(records)
            c.executemany("UPDATE llm_batch_requests SET outcome=? WHERE batch=? AND key=?", outcomes)
            if lines:
                self.plan(lines, attempt=2)
            c.execute("UPDATE llm_batches SET ingested_at=?, updated_at=? WHERE id=?", (now, now, row.id))
        n_ok = sum(r.ok for r in records)
        self.say(f"batch {b.id}: {b.status}; {n_ok:,} answered, {len(records) - n_ok:,} failed"
                 + (f", {len(lines):,} sent again" if lines else "")
                 + (f", {sum(1 for o, *_ in outcomes if o == 'cancelled'):,} left for the next run"
                    if b.status == "cancelled" else ""))
        return out

    # -- the loop ------------------------------------------------------------------------------
    def run(self, pending: dict[str, tuple], requests: dict[str, str], params: dict,
            deliver: Callable[[str, CallRecord | None], None], *, fits: Callable[[str], bool] | None = None) -> None:
        """Submit what is not already in a batch, poll, ingest, deliver each key's result (None: no result in
        this run). `fits(key)` is asked before each new request is submitted (the stage's budget): the first
        False leaves that request and the rest unsent."""
        self._pending_lines: dict[int, bytes] = {}
        self.recover()
        waiting = self.live_batches_for(pending)
        if waiting:
            self.say(f"{len(waiting):,} request(s) already in {len(set(waiting.values()))} submitted batch(es): "
                     "polling them, not submitting again")
        new = []
        for key, (prompt, messages) in pending.items():
            if key in waiting:
                continue
            if fits is not None and not fits(key):
                break
            new.append((key, jsonl_line(key, self.ep.model, messages, params), requests[key], prompt.display_path,
                        prompt.hash))
        self.plan(new)
        left = set(waiting) | {n[0] for n in new}
        for key in pending:
            if key not in left:
                deliver(key, None)
        status: dict[int, str] = {}
        while left:
            active = self._active_for(left)
            if not active:   # nothing live holds them any more (another process ingested them): not run here
                for key in sorted(left):
                    deliver(key, None)
                break
            for row in active:
                if row.status == "submitting":
                    self.submit(row)
                    continue
                b = self.client.batches.retrieve(row.batch_id)
                self._update(row.id, b)
                if b.status != status.get(row.id):
                    rc = b.request_counts
                    counts = (f" ({rc.completed:,} done, {rc.failed:,} failed of {rc.total:,})" if rc and rc.total
                              else "")
                    self.say(f"batch {b.id}: {b.status.replace('_', ' ')}{counts}")
                    status[row.id] = b.status
                if b.status in DONE:
                    for key, rec in self.ingest(row, b).items():
                        if key in left and (rec is not None or b.status == "cancelled"):
                            deliver(key, rec)
                            left.discard(key)
            if left and not any(r.status == "submitting" for r in self._active_for(left)):
                time.sleep(self.cfg.poll_interval_s)

    def _active_for(self, keys: set[str]) -> list[BatchRow]:
        ids = set(self.live_batches_for(keys).values())
        return [r for r in _rows(self.store, "ingested_at IS NULL") if r.id in ids]


def _cost(price, pt, ct):
    return cost_usd(price, pt, ct)


# -- listing and cancelling (workbench batches) ------------------------------------------------
def list_batches(ws: Workspace, *, refresh: bool = False) -> list[dict]:
    rows = [dict(r) for r in ws.store.query(
        "SELECT id, batch_id, stage, endpoint, model, attempt, status, n_requests, n_completed, n_failed, "
        "created_at, updated_at, ingested_at, error FROM llm_batches ORDER BY id")]
    if refresh:
        clients = {}
        for r in rows:
            if r["batch_id"] and r["status"] not in DONE:
                if r["endpoint"] not in clients:
                    clients[r["endpoint"]] = openai_client(resolve_endpoint(ws.config, r["endpoint"]))
                b = clients[r["endpoint"]].batches.retrieve(r["batch_id"])
                rc = b.request_counts
                with ws.store.write() as c:
                    c.execute("UPDATE llm_batches SET status=?, n_completed=?, n_failed=?, updated_at=? WHERE id=?",
                              (b.status, rc.completed if rc else 0, rc.failed if rc else 0, utcnow(), r["id"]))
                r.update(status=b.status, n_completed=rc.completed if rc else 0, n_failed=rc.failed if rc else 0)
    return rows


def cancel_batch(ws: Workspace, ident: str) -> dict:
    """Cancel a live batch by the provider's id or the workspace's number; its finished lines are still
    ingested by the run polling it (or the next one), the rest are left for the next run."""
    row = ws.store.one("SELECT * FROM llm_batches WHERE batch_id=? OR CAST(id AS TEXT)=?", (ident, ident))
    if row is None:
        known = [r[0] or f"#{r[1]}" for r in ws.store.query("SELECT batch_id, id FROM llm_batches ORDER BY id")]
        raise WorkbenchError(f"no batch {ident!r} in this workspace (known: {', '.join(known[-10:]) or 'none'}); "
                             "see `workbench batches WORKSPACE`")
    if row["batch_id"] is None:
        raise WorkbenchError(f"batch #{row['id']} was never submitted (status {row['status']}); nothing to cancel")
    if row["status"] in DONE:
        raise WorkbenchError(f"batch {row['batch_id']} is already {row['status']}; nothing to cancel")
    b = openai_client(resolve_endpoint(ws.config, row["endpoint"])).batches.cancel(row["batch_id"])
    with ws.store.write() as c:
        c.execute("UPDATE llm_batches SET status=?, updated_at=? WHERE id=?", (b.status, utcnow(), row["id"]))
    return {"batch_id": b.id, "status": b.status}
