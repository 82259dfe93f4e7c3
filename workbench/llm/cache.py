"""The durable call cache (table `llm_calls`): one row per distinct request, written the moment it arrives.

Key = sha256 of (model, rendered messages, sampling params) in canonical JSON, where every
image data URL is replaced by the sha256 of its decoded bytes: the same picture gives the
same key whatever its encoding path, and the stored `request` stays small (images appear
as `sha256:<hex>` references, never as base64).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from workbench.core.store import Store

IMAGE_REF_PREFIX = "sha256:"


def _image_ref(url: str) -> str:
    if url.startswith("data:") and "," in url:
        head, data = url.split(",", 1)
        raw = base64.b64decode(data) if ";base64" in head else data.encode()
        return IMAGE_REF_PREFIX + hashlib.sha256(raw).hexdigest()
    return url  # an http(s) URL is its own identity


def storable_messages(messages: list[dict]) -> list[dict]:
    """Messages with image data URLs replaced by content-hash references (for keys and storage)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for p in content:
                if p.get("type") == "image_url":
                    img = dict(p["image_url"])
                    img["url"] = _image_ref(img["url"])
                    p = {**p, "image_url": img}
                parts.append(p)
            m = {**m, "content": parts}
        out.append(m)
    return out


def request_json(model: str, messages: list[dict], params: dict) -> str:
    return json.dumps({"model": model, "messages": storable_messages(messages), "params": params},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def call_key(model: str, messages: list[dict], params: dict) -> str:
    return hashlib.sha256(request_json(model, messages, params).encode()).hexdigest()


@dataclass
class CallRecord:
    """One finished call (or one failure), as stored."""

    key: str
    stage: str
    endpoint: str
    model: str
    request: str
    status: str                      # 'ok' | 'error'
    raw_text: str | None = None
    raw_response: str | None = None
    finish_reason: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float | None = None
    attempts: int = 1
    stage_run_id: int | None = None
    prompt_file: str | None = None
    prompt_hash: str | None = None
    created_at: str = ""
    cached: bool = False             # True when served from the cache in this run (not stored)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


_COLS = ("key", "stage", "endpoint", "model", "stage_run_id", "prompt_file", "prompt_hash", "request", "status",
         "raw_text", "raw_response", "finish_reason", "error", "prompt_tokens", "completion_tokens", "cost_usd",
         "latency_s", "attempts", "created_at")


class CallCache:
    def __init__(self, store: Store):
        self.store = store

    def get_many(self, keys: Iterable[str], *, ok_only: bool = True) -> dict[str, CallRecord]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, CallRecord] = {}
        cond = " AND status='ok'" if ok_only else ""
        for i in range(0, len(keys), 900):  # stay under SQLite's variable limit
            chunk = keys[i:i + 900]
            rows = self.store.query(
                f"SELECT {', '.join(_COLS)} FROM llm_calls WHERE key IN ({','.join('?' * len(chunk))}){cond}", chunk)
            for r in rows:
                out[r["key"]] = CallRecord(**{c: r[c] for c in _COLS}, cached=True)
        return out

    def get(self, key: str, *, ok_only: bool = True) -> CallRecord | None:
        return self.get_many([key], ok_only=ok_only).get(key)

    def put(self, rec: CallRecord) -> None:
        """Commit one record now (an answer replaces an earlier failure for the same key)."""
        self.put_many([rec])

    def put_many(self, recs: Iterable[CallRecord]) -> None:
        rows = [tuple(getattr(r, c) for c in _COLS) for r in recs]
        with self.store.write() as conn:
            conn.executemany(
                f"INSERT OR REPLACE INTO llm_calls({', '.join(_COLS)}) VALUES ({','.join('?' * len(_COLS))})", rows)

    def records(self, *, stage: str | None = None, stage_run_id: int | None = None,
                prompt_hash: str | None = None, ok_only: bool = True) -> list[CallRecord]:
        conds, params = [], []
        for col, val in (("stage", stage), ("stage_run_id", stage_run_id), ("prompt_hash", prompt_hash)):
            if val is not None:
                conds.append(f"{col}=?")
                params.append(val)
        if ok_only:
            conds.append("status='ok'")
        where = (" WHERE " + " AND ".join(conds)) if conds else ""
        rows = self.store.query(f"SELECT {', '.join(_COLS)} FROM llm_calls{where} ORDER BY created_at", params)
        return [CallRecord(**{c: r[c] for c in _COLS}, cached=True) for r in rows]
