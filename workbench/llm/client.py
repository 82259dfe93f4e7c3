"""One async client over the `openai` package for any OpenAI-compatible endpoint.

Endpoints come from `workbench.toml` `[endpoints.<name>]`. With none configured, the name
`default` means what the openai client itself does: `OPENAI_BASE_URL` (or api.openai.com) and
`OPENAI_API_KEY`. Keys are read from the environment at call time and never stored; a base URL other than
api.openai.com without a key gets the placeholder "EMPTY" (local servers accept any key).

`make_client` picks the client for an endpoint: `LLMClient` (HTTP), `PoolClient` (`[endpoints.X] pool = [...]`:
the least-loaded healthy member; one failing `pool_failures` times in a row is set aside `pool_cooldown_s` and its
failed call re-sent elsewhere; records carry the pool's model, so the cache key does not depend on the member) or
`llm/local.py`'s client (`kind = "transformers"`).

`LLMClient.complete` does one logical call: rate limits, then attempts with exponential backoff
(honouring `Retry-After` on 429/5xx, retrying timeouts, dropped connections and 200 replies that are
not a chat completion: truncated JSON, a proxy's HTML page), and returns a `CallRecord` whose status
is 'ok' only for a non-empty reply with finish_reason 'stop'. `timeout_s` is a total deadline per
attempt (connect + send + the whole body), not a per-read timeout.

Secrets never reach a record: every stored field passes through `scrub_secrets` (the endpoint's key
and any key in its base URL; in raw_response and errors also Authorization/api-key header values
and sk-... tokens), and an endpoint is only ever shown through `redact_url`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from dataclasses import dataclass
from typing import overload
from urllib.parse import unquote, urlsplit, urlunsplit

from workbench.core.config import Config, EndpointConfig
from workbench.core.errors import ConfigError, WorkbenchError
from workbench.llm.cache import CallRecord
from workbench.llm.cost import Price, cost_usd, estimate_prompt_tokens, price_for
from workbench.llm.limits import Limiter
from workbench.llm.local import LocalTransformersClient

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 300.0
BODY_PREFIX_CHARS = 200     # how much of an unreadable reply an error quotes
# A connection that fails before any call of this client has been answered means the server is most likely not up
# (a wrong port, vLLM not started): such a call is tried this many times, not max_retries (~1 minute of backoff per
# row), and once one call has given up that way the others stop at their next attempt. After one answer the full
# retry budget applies (a server restarting mid-run comes back).
COLD_CONNECT_ATTEMPTS = 2
REDACTED = "***"
MIN_SECRET_CHARS = 8        # shorter "keys" ("test", "x", "EMPTY") are placeholders; replacing them would mangle text

# Query parameters whose values are credentials (api-key, access_token, client_secret, sig, X-Amz-Signature, ...).
_SECRET_PARAM = re.compile(r"key|token|secret|sig|passw|pwd|auth|credential", re.I)
# Header-like `name: value` / `"name": "value"` / `name=value` pairs that carry credentials.
_SECRET_FIELD = re.compile(
    r"""(?<![A-Za-z0-9])(?P<name>proxy-authorization|authorization|x-api-key|api[-_]?key|openai[-_]api[-_]key)"""
    r"""(?P<sep>["']?\s*[:=]\s*)"""
    r"""(?:"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>[^']*)'|(?P<bare>(?:(?:bearer|basic|token)\s+)?[^\s"'<>&,;}\\]+))""",
    re.I)
# Key-shaped tokens: OpenAI (sk-, sk-proj-), Anthropic (sk-ant-), and the like.
_SK_TOKEN = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")


def _redact_field(m: re.Match) -> str:
    if m.group("dq") is not None:
        value = f'"{REDACTED}"'
    elif m.group("sq") is not None:
        value = f"'{REDACTED}'"
    else:
        value = REDACTED
    return m.group("name") + m.group("sep") + value


@overload
def scrub_secrets(text: str, secrets=(), *, patterns: bool = True) -> str: ...
@overload
def scrub_secrets(text: str | None, secrets=(), *, patterns: bool = True) -> str | None: ...
def scrub_secrets(text: str | None, secrets=(), *, patterns: bool = True) -> str | None:
    """`text` with every exact secret in `secrets` (of at least MIN_SECRET_CHARS) replaced by ***; with
    `patterns`, also the values of Authorization/api-key/x-api-key fields and sk-... tokens. None stays None.

    Apply it to everything stored from a reply. The model's own answer (raw_text) takes
    `patterns=False`: only real secrets are removed from it, never look-alikes that may be data.
    """
    if not text:
        return text
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_CHARS:
            for form in {secret, json.dumps(secret)[1:-1]}:
                text = text.replace(form, REDACTED)
    if patterns:
        text = _SECRET_FIELD.sub(_redact_field, text)
        text = _SK_TOKEN.sub(REDACTED, text)
    return text


def _split_url(url: str):
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return parts


def url_secrets(url: str | None) -> list[str]:
    """The credentials embedded in a URL: a userinfo password (or a lone user token) and secret-looking
    query values, raw and percent-decoded."""
    parts = _split_url(url or "")
    if parts is None:
        return []
    out = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        user, _, password = userinfo.partition(":")
        out.append(password or user)
    for pair in parts.query.split("&"):
        name, eq, value = pair.partition("=")
        if eq and value and _SECRET_PARAM.search(unquote(name)):
            out.append(value)
    return [v for s in out if s for v in dict.fromkeys((s, unquote(s)))]


def redact_url(url: str) -> str:
    """`url` safe to show or store: a userinfo password (or a lone user, often a token) becomes ***, and
    so does every query value whose name looks like a credential (key, token, secret, sig, password, auth)."""
    parts = _split_url(url)
    if parts is None:
        if not url or "://" not in url:
            return url
        # Unparseable but URL-like: redact by pattern rather than risk showing a key.
        url = re.sub(r"(://)([^/@]*)@", lambda m: m.group(1) + _redact_userinfo(m.group(2)) + "@", url)
        return re.sub(r"([?&][^=&#]*(?:key|token|secret|sig|passw|pwd|auth|credential)[^=&#]*=)[^&#]*",
                      r"\1" + REDACTED, url, flags=re.I)
    if not url_secrets(url) and "@" not in parts.netloc:
        return url   # nothing to hide: exactly as given
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{_redact_userinfo(userinfo)}@{host}"
    query = "&".join(
        f"{name}={REDACTED}" if eq and value and _SECRET_PARAM.search(unquote(name)) else f"{name}{eq}{value}"
        for name, eq, value in (pair.partition("=") for pair in parts.query.split("&"))) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_userinfo(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{REDACTED}" if colon else REDACTED


@dataclass
class Endpoint:
    name: str
    config: EndpointConfig
    price: Price | None     # (input, output) USD per million tokens; None: unknown (see llm/cost.py)
    members: list[Endpoint] | None = None   # a pool: the endpoints that serve this model (PoolClient)

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def base_url(self) -> str:
        if self.members:
            return self.members[0].base_url
        return self.config.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_BASE_URL

    @property
    def public_urls(self) -> list[str]:
        """Where requests go, safe to show: one URL, or every pool member's."""
        return [redact_url(m.base_url) for m in (self.members or [self])]

    def api_key(self) -> str:
        key = os.environ.get(self.config.api_key_env)
        if key:
            return key
        if self.base_url.rstrip("/") == OPENAI_DEFAULT_BASE_URL:
            raise WorkbenchError(
                f"endpoint {self.name!r} ({redact_url(self.base_url)}) needs an API key: set the environment variable "
                f"{self.config.api_key_env} (keys are never read from workbench.toml)")
        return "EMPTY"  # local servers (vLLM, Ollama, llama.cpp) accept any key

    def describe(self) -> str:
        if self.members:
            return f"{self.name}: {self.model} on a pool of {', '.join(m.name for m in self.members)}"
        where = self.config.local_path if self.config.kind == "transformers" else redact_url(self.base_url)
        return f"{self.name}: {self.model} at {where}"


def resolve_endpoint(config: Config, name: str = "default", *, base_url: str | None = None,
                     model: str | None = None, **overrides) -> Endpoint:
    """The named endpoint from config, with optional overrides (notebook parameters, CLI flags)."""
    if name in config.endpoints:
        cfg = config.endpoints[name]
    elif name == "default":
        cfg = EndpointConfig()  # env vars, exactly like the openai client
    else:
        known = ", ".join(sorted(config.endpoints)) or "none"
        raise ConfigError(f"workbench.toml: no [endpoints.{name}] (configured: {known}); add it or pick another")
    upd = {k: v for k, v in dict(base_url=base_url, model=model, **overrides).items() if v is not None}
    if upd:
        cfg = cfg.model_copy(update=upd)
    members = None
    if cfg.pool:
        if base_url is not None:
            raise WorkbenchError(f"endpoint {name!r} is a pool of {cfg.pool}: --base-url cannot override it; "
                                 "name one member instead")
        # A member serves the pool's model: it is asked under its own model name only if it sets one.
        members = [resolve_endpoint(config, m, model=None if "model" in config.endpoints[m].model_fields_set
                                    else cfg.model) for m in cfg.pool]
        if "max_concurrency" not in cfg.model_fields_set:   # the pool can keep every member busy
            cfg = cfg.model_copy(update={"max_concurrency": sum(m.config.max_concurrency for m in members)})
    ep = Endpoint(name, cfg, None, members)
    ep.price = price_for(cfg.model, endpoint=cfg, overrides=config.prices, base_url=ep.base_url)
    return ep


def _retry_after(exc) -> float | None:
    resp = getattr(exc, "response", None)
    if resp is None:
        return None
    h = resp.headers
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        v = h.get(name)
        if v:
            try:
                return min(float(v) * scale, MAX_RETRY_AFTER_S)
            except ValueError:
                import email.utils

                try:
                    when = email.utils.parsedate_to_datetime(v).timestamp()
                    return min(max(0.0, when - time.time()), MAX_RETRY_AFTER_S)
                except (TypeError, ValueError):
                    return None
    return None


def make_client(endpoint: Endpoint):
    """The client for an endpoint's kind: OpenAI-compatible HTTP, or a local transformers model (llm/local.py)."""
    if endpoint.config.kind == "transformers":
        return LocalTransformersClient(endpoint)
    if endpoint.members:
        return PoolClient(endpoint)
    return LLMClient(endpoint)


class LLMClient:
    """Create inside the event loop that uses it (the openai async client binds to its loop)."""

    def __init__(self, endpoint: Endpoint):
        import openai

        self.endpoint = endpoint
        self.limiter = Limiter(endpoint.config.requests_per_minute, endpoint.config.tokens_per_minute)
        self._openai = openai
        key = endpoint.api_key()
        # Scrubbed from every stored field: the key, and any credential in the base URL.
        self._secrets = ([key] if key != "EMPTY" else []) + url_secrets(endpoint.base_url)
        self._where = redact_url(endpoint.base_url)
        # timeout= bounds each read; complete() bounds each whole attempt with asyncio.wait_for.
        self._client = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=key,
                                          max_retries=0, timeout=endpoint.config.timeout_s)
        self._answered = False          # any reply from the server (COLD_CONNECT_ATTEMPTS)
        self._down: str | None = None   # why the endpoint looks down (a call gave up on connecting, none answered)

    async def close(self) -> None:
        await self._client.close()

    async def complete(self, messages: list[dict], params: dict, *, est_tokens: int | None = None) -> CallRecord:
        """One call with retries. Returns a record without key/stage/request (the caller fills them)."""
        oa = self._openai
        cfg = self.endpoint.config
        est = est_tokens or (estimate_prompt_tokens(messages) + (params.get("max_tokens") or 256))
        attempts, last_error, t_start = 0, "", time.monotonic()
        while True:
            attempts += 1
            await self.limiter.acquire(est)
            t0 = time.monotonic()
            wait = None
            try:
                raw = await asyncio.wait_for(
                    self._client.chat.completions.with_raw_response.create(
                        model=cfg.model,
                        # openai's stubs want its TypedDicts; these are plain dicts of the same shape
                        messages=messages,  # type: ignore[arg-type]
                        **params),
                    timeout=cfg.timeout_s)
                resp, last_error = self._parse(raw)
            except (TimeoutError, oa.APITimeoutError):
                last_error = f"timeout: no complete reply within the total deadline of {cfg.timeout_s:g}s"
            except oa.APIConnectionError as exc:
                cause = f" ({exc.__cause__})" if exc.__cause__ is not None and str(exc.__cause__) else ""
                last_error = f"connection failed: {exc}{cause} (endpoint {self._where})"
                if not self._answered and (self._down or attempts >= min(COLD_CONNECT_ATTEMPTS, cfg.max_retries + 1)):
                    self._down = self._down or last_error
                    return self._record("error", attempts=attempts, latency=time.monotonic() - t_start,
                                        error=f"{last_error} (gave up after {attempts} attempt(s): no call to this "
                                              "endpoint has been answered in this run; is the server up?)")
            except oa.APIStatusError as exc:
                self._answered = True
                body = (exc.response.text or "") if exc.response is not None else ""
                body = scrub_secrets(body, self._secrets)[:500]   # whole, then cut: no half key survives
                last_error = f"HTTP {exc.status_code}: {body}"
                if exc.status_code not in RETRYABLE_STATUS:
                    return self._record("error", error=last_error, attempts=attempts, latency=time.monotonic() - t0)
                wait = _retry_after(exc)
                if wait is not None and exc.status_code == 429:
                    self.limiter.pause(wait)
            else:
                self._answered = True
                if resp is not None:
                    return self._from_response(resp, attempts, time.monotonic() - t0)
            if attempts > cfg.max_retries:
                return self._record("error", error=f"{last_error} (gave up after {attempts} attempt(s))",
                                    attempts=attempts, latency=time.monotonic() - t_start)
            if wait is None:
                wait = min(cfg.retry_base_s * 2 ** (attempts - 1), cfg.retry_max_s) * random.uniform(0.5, 1.0)
            await asyncio.sleep(wait)

    def _parse(self, raw):
        """(ChatCompletion, "") for a readable reply; (None, why) for a 200 that is not a chat completion
        (a truncated body, a proxy's HTML page, a JSON error object): retried like a 5xx."""
        http = raw.http_response
        try:
            body = http.text
        except Exception as exc:
            body = f"<unreadable body: {type(exc).__name__}>"
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict) and "choices" in data:
            try:
                resp = raw.parse()
            except Exception:
                resp = None
            if resp is not None and hasattr(resp, "model_dump_json"):
                return resp, ""
        ctype = http.headers.get("content-type") or "no content-type"
        # Scrubbed whole and before repr(): no half key at the cut, and patterns see real line breaks.
        clean = scrub_secrets(body, getattr(self, "_secrets", ()))
        prefix = clean[:BODY_PREFIX_CHARS] + ("..." if len(clean) > BODY_PREFIX_CHARS else "")
        return None, f"unreadable reply (HTTP {http.status_code}, {ctype}, {len(body)} chars): {prefix!r}"

    def _from_response(self, resp, attempts: int, latency: float | None) -> CallRecord:
        raw_response = resp.model_dump_json(exclude_unset=True)
        usage = resp.usage
        pt = usage.prompt_tokens if usage else None
        ct = usage.completion_tokens if usage else None
        if not resp.choices:
            return self._record("error", error="the reply has no choices", raw_response=raw_response,
                                attempts=attempts, latency=latency, pt=pt, ct=ct)
        choice = resp.choices[0]
        text = choice.message.content if choice.message else None
        fr = choice.finish_reason
        if fr != "stop":
            why = {"length": "the reply was cut off at max_tokens (raise max_tokens or ask for less)",
                   "content_filter": "the endpoint's content filter withheld the reply"}.get(fr, "not a finished reply")
            return self._record("error", error=f"finish_reason={fr}: {why}", raw_text=text,
                                raw_response=raw_response, finish_reason=fr, attempts=attempts, latency=latency,
                                pt=pt, ct=ct)
        if not (text or "").strip():
            # Stored as a failure (raw reply kept) so the next run asks again; an empty answer parses as nothing.
            return self._record("error", error=f"empty reply (finish_reason={fr})", raw_text=text,
                                raw_response=raw_response, finish_reason=fr, attempts=attempts, latency=latency,
                                pt=pt, ct=ct)
        return self._record("ok", raw_text=text, raw_response=raw_response, finish_reason=fr,
                            attempts=attempts, latency=latency, pt=pt, ct=ct)

    def _record(self, status, *, error=None, raw_text=None, raw_response=None, finish_reason=None, attempts=1,
                latency=None, pt=None, ct=None) -> CallRecord:
        """The CallRecord for this endpoint; every text field is scrubbed of secrets here (reply bodies quoted
        in errors were already scrubbed whole before being cut)."""
        secrets = getattr(self, "_secrets", ())
        error = scrub_secrets(error, secrets)
        raw_response = scrub_secrets(raw_response, secrets)
        raw_text = scrub_secrets(raw_text, secrets, patterns=False)
        return CallRecord(key="", stage="", endpoint=self.endpoint.name, model=self.endpoint.model, request="",
                          status=status, raw_text=raw_text, raw_response=raw_response, finish_reason=finish_reason,
                          error=error, prompt_tokens=pt, completion_tokens=ct,
                          cost_usd=cost_usd(self.endpoint.price, pt, ct), latency_s=latency, attempts=attempts)


# Errors that are the request's fault, not the server's: another member would answer the same.
_REQUEST_FAULTS = ("HTTP 400", "HTTP 413", "HTTP 422")


def _member_failed(rec: CallRecord) -> bool:
    """A failure of the server (no reply, 5xx, timeout, unreadable body), not of the request or the model."""
    return (not rec.ok and rec.raw_response is None and rec.finish_reason is None
            and not (rec.error or "").startswith(_REQUEST_FAULTS))


class _Member:
    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.client = LLMClient(endpoint)
        self.capacity = endpoint.config.max_concurrency
        self.in_flight = 0
        self.failures = 0              # consecutive
        self.aside_until = 0.0         # monotonic time before which it is not asked
        self.calls = 0

    def healthy(self, now: float) -> bool:
        return now >= self.aside_until


class PoolClient:
    """Several endpoints serving one model behind `complete()`, like one LLMClient.

    Each request goes to the healthy member with the lowest load (in flight / its max_concurrency); when
    every healthy member is full it waits for a free slot. A member whose calls fail `pool_failures` times
    in a row is set aside for `pool_cooldown_s`, then tried again; a call it failed is re-sent to another
    member. Records carry the pool's name, model and price, so the cache key and the stored row do not
    depend on which server answered; `calls_per_member` says who did.
    """

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.members = [_Member(m) for m in endpoint.members or []]
        self._freed: asyncio.Condition | None = None

    @property
    def calls_per_member(self) -> dict[str, int]:
        return {m.endpoint.name: m.calls for m in self.members}

    async def close(self) -> None:
        for m in self.members:
            await m.client.close()

    def _pick(self, exclude: set) -> _Member | None:
        now = time.monotonic()
        live = [m for m in self.members if id(m) not in exclude]
        healthy = [m for m in live if m.healthy(now)]
        if not healthy and live:
            # Everything left is set aside: probe the one whose pause ends first rather than fail the call.
            healthy = [min(live, key=lambda m: m.aside_until)]
        free = [m for m in healthy if m.in_flight < m.capacity]
        if not free:
            return None
        return min(free, key=lambda m: (m.in_flight / m.capacity, -m.capacity))

    async def complete(self, messages: list[dict], params: dict, *, est_tokens: int | None = None) -> CallRecord:
        if self._freed is None:
            self._freed = asyncio.Condition()
        cfg = self.endpoint.config
        tried: set = set()
        rec = None
        while len(tried) < len(self.members):
            async with self._freed:
                while (member := self._pick(tried)) is None:
                    await self._freed.wait()
                member.in_flight += 1
            try:
                rec = await member.client.complete(messages, params, est_tokens=est_tokens)
            finally:
                async with self._freed:
                    member.in_flight -= 1
                    self._freed.notify_all()
            member.calls += 1
            if not _member_failed(rec):
                member.failures = 0
                break
            member.failures += 1
            if member.failures >= cfg.pool_failures:
                member.aside_until = time.monotonic() + cfg.pool_cooldown_s
                member.failures = 0
            tried.add(id(member))
            rec.error = f"{rec.error} [pool member {member.endpoint.name}]"
        # A pool has members (make_client builds one only then; the config refuses an empty pool): the loop ran.
        assert rec is not None
        # The pool's identity, whichever member answered: same key, same stored endpoint and model, pool price.
        rec.endpoint, rec.model = self.endpoint.name, self.endpoint.model
        if rec.prompt_tokens is not None or rec.completion_tokens is not None:
            rec.cost_usd = cost_usd(self.endpoint.price, rec.prompt_tokens, rec.completion_tokens)
        return rec

    def _record(self, status, *, error=None, **kw) -> CallRecord:
        """What the stage base uses when `complete` itself raised."""
        return CallRecord(key="", stage="", endpoint=self.endpoint.name, model=self.endpoint.model, request="",
                          status=status, error=error)
