"""One async client over the `openai` package for any OpenAI-compatible endpoint.

Endpoints come from `workbench.toml` `[endpoints.<name>]`. With none configured, the name
`default` means what the openai client itself does: `OPENAI_BASE_URL` (or api.openai.com) and
`OPENAI_API_KEY`. Keys are read from the environment at call time and never stored.

`LLMClient.complete` does one logical call: rate limits, then attempts with exponential backoff
(honouring `Retry-After` on 429/5xx, retrying timeouts and dropped connections), and returns a
`CallRecord` whose status is 'ok' only for a reply with finish_reason 'stop'.
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.config import Config, EndpointConfig
from workbench.errors import ConfigError, WorkbenchError
from workbench.llm.cache import CallRecord
from workbench.llm.cost import cost_usd, estimate_prompt_tokens, price_for
from workbench.llm.limits import Limiter

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 300.0


@dataclass
class Endpoint:
    name: str
    config: EndpointConfig
    price: tuple[float, float]

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def base_url(self) -> str:
        return self.config.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_BASE_URL

    def api_key(self) -> str:
        key = os.environ.get(self.config.api_key_env)
        if key:
            return key
        if self.base_url.rstrip("/") == OPENAI_DEFAULT_BASE_URL:
            raise WorkbenchError(
                f"endpoint {self.name!r} ({self.base_url}) needs an API key: set the environment variable "
                f"{self.config.api_key_env} (keys are never read from workbench.toml)")
        return "EMPTY"  # local servers (vLLM, Ollama, llama.cpp) accept any key

    def describe(self) -> str:
        return f"{self.name}: {self.model} at {self.base_url}"


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
    return Endpoint(name, cfg, price_for(cfg.model, endpoint=cfg, overrides=config.prices))


def image_data_url(path: str | Path, mime: str | None = None) -> str:
    """A data URL for an image file (what chat messages carry); the cache keys it by content."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise WorkbenchError(f"{p}: cannot read image ({exc})") from None
    mime = mime or mimetypes.guess_type(p.name)[0] or "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


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
        from workbench.llm.local import LocalTransformersClient

        return LocalTransformersClient(endpoint)
    return LLMClient(endpoint)


class LLMClient:
    """Create inside the event loop that uses it (the openai async client binds to its loop)."""

    def __init__(self, endpoint: Endpoint):
        import openai

        self.endpoint = endpoint
        self.limiter = Limiter(endpoint.config.requests_per_minute, endpoint.config.tokens_per_minute)
        self._openai = openai
        key = endpoint.api_key()
        self._secret = key if key != "EMPTY" else None   # scrubbed from any error text we store
        self._client = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=key,
                                          max_retries=0, timeout=endpoint.config.timeout_s)

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
                resp = await self._client.chat.completions.create(model=cfg.model, messages=messages, **params)
            except oa.APITimeoutError:
                last_error = f"timeout after {cfg.timeout_s:g}s"
            except oa.APIConnectionError as exc:
                last_error = f"connection failed: {exc}"
            except oa.APIStatusError as exc:
                body = (exc.response.text or "")[:500] if exc.response is not None else ""
                last_error = f"HTTP {exc.status_code}: {body}"
                if exc.status_code not in RETRYABLE_STATUS:
                    return self._record("error", error=last_error, attempts=attempts, latency=time.monotonic() - t0)
                wait = _retry_after(exc)
                if wait is not None and exc.status_code == 429:
                    self.limiter.pause(wait)
            else:
                return self._from_response(resp, attempts, time.monotonic() - t0)
            if attempts > cfg.max_retries:
                return self._record("error", error=f"{last_error} (gave up after {attempts} attempt(s))",
                                    attempts=attempts, latency=time.monotonic() - t_start)
            if wait is None:
                wait = min(cfg.retry_base_s * 2 ** (attempts - 1), cfg.retry_max_s) * random.uniform(0.5, 1.0)
            await asyncio.sleep(wait)

    def _from_response(self, resp, attempts: int, latency: float) -> CallRecord:
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
        return self._record("ok", raw_text=text or "", raw_response=raw_response, finish_reason=fr,
                            attempts=attempts, latency=latency, pt=pt, ct=ct)

    def _record(self, status, *, error=None, raw_text=None, raw_response=None, finish_reason=None, attempts=1,
                latency=None, pt=None, ct=None) -> CallRecord:
        secret = getattr(self, "_secret", None)
        if error and secret and secret in error:
            error = error.replace(secret, "***")
        return CallRecord(key="", stage="", endpoint=self.endpoint.name, model=self.endpoint.model, request="",
                          status=status, raw_text=raw_text, raw_response=raw_response, finish_reason=finish_reason,
                          error=error, prompt_tokens=pt, completion_tokens=ct,
                          cost_usd=cost_usd(self.endpoint.price, pt, ct), latency_s=latency, attempts=attempts)
