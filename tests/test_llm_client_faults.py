"""The HTTP client against misbehaving endpoints: garbage 200 bodies, trickling replies, empty answers,
echoed secrets, keys in the base URL, and prices for models nobody has priced.

All at the client level: `make_client(endpoint).complete(messages, params)` against tests/openai_server.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest

from openai_server import OpenAIServer, Reply
from workbench.core.config import Config, EndpointConfig
from workbench.llm.client import Endpoint, make_client, redact_url, resolve_endpoint, scrub_secrets
from workbench.llm.cost import PRICES, cost_usd, is_local_url, price_for

pytestmark = pytest.mark.timeout(120)

MESSAGES = [{"role": "user", "content": "Item 1"}]
HTML_PAGE = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>nginx</body></html>"


def endpoint(base_url: str, price=(1.0, 2.0), **kw) -> Endpoint:
    cfg = EndpointConfig(base_url=base_url, model="test-model",
                         **{"retry_base_s": 0.01, "retry_max_s": 0.05, "max_retries": 3, "timeout_s": 5, **kw})
    return Endpoint("test", cfg, price)


def complete(ep: Endpoint, messages=MESSAGES, params=None):
    async def go():
        client = make_client(ep)
        try:
            return await client.complete(messages, params or {"temperature": 0.0})
        finally:
            await client.close()

    return asyncio.run(go())


def stored_fields(rec) -> str:
    """Everything of a record that reaches the database, as one string."""
    return json.dumps(dataclasses.asdict(rec), default=str)


# -- 1. garbage 200 bodies are transport failures: retried, then recorded with the body's first bytes ----------

def test_garbage_200_bodies_are_retried_like_5xx():
    def script(req):
        if req.attempt == 1:
            return Reply(raw='{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "mes')
        if req.attempt == 2:
            return Reply(raw=HTML_PAGE, content_type="text/html")
        return Reply("answer")

    with OpenAIServer(script) as server:
        rec = complete(endpoint(server.base_url))
        assert len(server.requests) == 3
    assert rec.status == "ok" and rec.raw_text == "answer" and rec.attempts == 3


def test_garbage_200_bodies_give_up_after_max_retries_with_the_body_prefix():
    with OpenAIServer(lambda req: Reply(raw=HTML_PAGE, content_type="text/html")) as server:
        rec = complete(endpoint(server.base_url, max_retries=2))
        assert len(server.requests) == 3
    assert rec.status == "error" and rec.attempts == 3
    assert "502 Bad Gateway" in rec.error and "gave up after 3" in rec.error
    assert "HTTP 200" in rec.error and "text/html" in rec.error
    assert rec.raw_response is None   # raw_response holds response JSON only

    with OpenAIServer(lambda req: Reply(raw='{"choices": [{"message": {"content": "ans')) as server:
        rec = complete(endpoint(server.base_url, max_retries=0))
    assert rec.status == "error" and rec.attempts == 1 and '{"choices"' in rec.error

    # A JSON object that is no chat completion (a gateway's error passed through with status 200) is retried too;
    # a chat completion with an empty choices list is the endpoint's own answer, failed at once.
    def script(req):
        if req.attempt == 1:
            return Reply(body={"error": {"message": "upstream overloaded", "code": 503}})
        return Reply(body={"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": []})

    with OpenAIServer(script) as server:
        rec = complete(endpoint(server.base_url))
        assert len(server.requests) == 2
    assert rec.status == "error" and rec.attempts == 2 and rec.error == "the reply has no choices"


# -- 2. timeout_s is a total deadline per attempt, not a per-read timeout ----------------------------------------

def test_timeout_is_a_total_deadline_against_a_trickling_server():
    # ~40 s of body at one byte every 0.1 s: every read succeeds well within timeout_s, the whole never does.
    with OpenAIServer(lambda req: Reply("x" * 200, trickle_s=0.1)) as server:
        t0 = time.monotonic()
        rec = complete(endpoint(server.base_url, timeout_s=1, max_retries=1))
        elapsed = time.monotonic() - t0
        assert len(server.requests) == 2
    assert rec.status == "error" and rec.attempts == 2
    assert "total deadline" in rec.error and "1s" in rec.error
    assert elapsed < 10, elapsed   # 2 attempts x 1 s + backoff; before the fix ~80 s


def test_a_slow_but_complete_reply_within_the_deadline_is_fine():
    with OpenAIServer(lambda req: Reply("answer", trickle_s=0.002)) as server:
        rec = complete(endpoint(server.base_url, timeout_s=10))
    assert rec.status == "ok" and rec.raw_text == "answer"


# -- 3. an empty reply is a failure, kept for inspection and retried on the next run -----------------------------

@pytest.mark.parametrize("text", ["", "  \n"])
def test_empty_reply_with_finish_reason_stop_is_a_recorded_failure(text):
    with OpenAIServer(lambda req: Reply(text)) as server:
        rec = complete(endpoint(server.base_url))
        assert len(server.requests) == 1   # not retried within the run: the next run retries it
    assert rec.status == "error" and rec.finish_reason == "stop"
    assert rec.error == "empty reply (finish_reason=stop)"
    assert json.loads(rec.raw_response)["choices"][0]["message"]["content"] == text
    assert rec.prompt_tokens is not None   # usage and cost are still recorded: the call was billed


def test_empty_reply_from_a_local_model_is_a_recorded_failure(monkeypatch):
    torch = pytest.importorskip("torch")
    from workbench.llm import local

    class Tok:
        eos_token_id = 2
        pad_token_id = 0

        def __call__(self, texts, **kw):
            return {"input_ids": torch.tensor([[5, 6, 7]])}

        def apply_chat_template(self, messages, **kw):
            return "prompt"

        def decode(self, ids, **kw):
            return ""   # EOS straight away: nothing to say

    class Model:
        dtype = torch.float32          # what a transformers model exposes; the backend casts inputs to it

        def generate(self, input_ids, **kw):
            return torch.cat([input_ids, torch.tensor([[2]])], dim=1)

    monkeypatch.setattr(local, "load_local_model", lambda path: (Tok(), Model(), False))
    cfg = EndpointConfig(kind="transformers", local_path="/nonexistent/fake", model="fake-local")
    rec = complete(Endpoint("loc", cfg, (0.0, 0.0)))
    assert rec.status == "error" and rec.error == "empty reply (finish_reason=stop)"
    assert rec.finish_reason == "stop" and json.loads(rec.raw_response)["backend"] == "transformers"


# -- 4. secrets echoed by the endpoint are scrubbed from everything stored ----------------------------------------

SECRET = "sk-proj-ECHOtest0123456789abcdef"


def test_echoed_headers_and_keys_are_scrubbed_from_the_record(monkeypatch):
    monkeypatch.setenv("ECHO_KEY", SECRET)
    other = "sk-live-0therKEY9876543210zyx"

    def script(req):
        return Reply(f"you sent {req.headers['authorization']} and {other}", echo_headers=True)

    with OpenAIServer(script) as server:
        rec = complete(endpoint(server.base_url, api_key_env="ECHO_KEY"))
        assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"   # the key was used
    assert rec.status == "ok"
    assert SECRET not in stored_fields(rec) and "sk-proj-" not in stored_fields(rec)
    echo = json.loads(rec.raw_response)["echo"]["headers"]
    assert echo["authorization"] == "***" and echo["host"].startswith("127.0.0.1")
    assert other not in rec.raw_response
    # The answer itself loses only the real key: a key-shaped string in an answer may be data (OCR of a screenshot).
    assert rec.raw_text == f"you sent Bearer *** and {other}"


def test_secrets_in_an_unreadable_body_are_scrubbed_from_the_error(monkeypatch):
    monkeypatch.setenv("ECHO_KEY", SECRET)
    page = f"<pre>Authorization: Bearer {SECRET}\napi-key: {SECRET}\nx-api-key={SECRET}</pre>"
    with OpenAIServer(lambda req: Reply(raw=page, content_type="text/html")) as server:
        rec = complete(endpoint(server.base_url, api_key_env="ECHO_KEY", max_retries=1))
    assert rec.status == "error" and rec.attempts == 2 and "x-api-key" in rec.error
    assert SECRET not in stored_fields(rec)


def test_scrub_secrets_unit():
    assert scrub_secrets(None) is None
    assert scrub_secrets("plain text, no keys") == "plain text, no keys"
    assert scrub_secrets("key=hunter2-long-secret!", ["hunter2-long-secret"]) == "key=***!"
    s = scrub_secrets('{"headers": {"Authorization": "Bearer abc.def", "api-key": "az-123", "X-Api-Key": "q"}}')
    assert json.loads(s) == {"headers": {"Authorization": "***", "api-key": "***", "X-Api-Key": "***"}}
    assert scrub_secrets("Authorization: Basic dXNlcjpwYXNz\nnext") == "Authorization: ***\nnext"
    fake_a, fake_b = "sk-" + "abcdefghijklmnop0123", "sk-" + "ant-api03-xyzXYZ_0123456789"   # not real keys
    assert scrub_secrets(f"token {fake_a} and {fake_b}") == "token *** and ***"
    assert scrub_secrets("task-list and sk-short") == "task-list and sk-short"   # not key-shaped
    assert "ab12cd34ef" not in scrub_secrets("see ?api_key=ab12cd34ef&x=1")


# -- 5. a key embedded in the base URL is never stored or shown -----------------------------------------------------

def test_redact_url():
    assert redact_url("https://user:sk-secret@host.example/v1") == "https://user:***@host.example/v1"
    assert redact_url("https://sk-secret@host.example/v1") == "https://***@host.example/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_url("https://h.example/v1?api-key=sk-x&api-version=2024-06-01") == \
        "https://h.example/v1?api-key=***&api-version=2024-06-01"
    assert redact_url("https://h/v1?sig=1&X-Amz-Signature=2&access_token=3&client_secret=4&apikey=5&key=6") == \
        "https://h/v1?sig=***&X-Amz-Signature=***&access_token=***&client_secret=***&apikey=***&key=***"
    assert redact_url("https://user:pw@[::1]:8443/v1?code=ok#frag") == "https://user:***@[::1]:8443/v1?code=ok#frag"
    assert redact_url("") == ""
    assert redact_url("not a url") == "not a url"


def test_keys_in_the_base_url_never_reach_describe_or_records(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAIServer(lambda req: Reply(raw=f"<pre>{req.headers.get('authorization')} {req.headers}</pre>",
                                        content_type="text/html")) as server:
        url = server.base_url.replace("http://", "http://user:sk-urlsecret-4242@")
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        ep = resolve_endpoint(Config(), "default", retry_base_s=0.01, max_retries=0)
        assert "sk-urlsecret-4242" not in ep.describe() and "user:***@" in ep.describe()
        rec = complete(ep)
    assert rec.status == "error" and "sk-urlsecret-4242" not in stored_fields(rec)
    # A refused connection's error names the endpoint without its key.
    ep = endpoint("http://user:sk-urlsecret-4242@127.0.0.1:9/v1?api-key=sk-q-secret", max_retries=0, timeout_s=2)
    rec = complete(ep)
    assert rec.status == "error" and "connection failed" in rec.error
    assert "sk-urlsecret-4242" not in rec.error and "sk-q-secret" not in rec.error and "127.0.0.1:9" in rec.error


# -- 6. unknown prices are unknown (None), local endpoints are free, nothing silently costs gpt-4o's price --------

def test_price_lookup_order_and_unknown_models():
    remote = EndpointConfig(base_url="https://api.example.com/v1", model="qwen2.5:7b")
    assert price_for("qwen2.5:7b", endpoint=remote) is None
    assert price_for("Qwen2-VL-7B-Instruct", endpoint=remote.model_copy(update={"model": "Qwen2-VL-7B-Instruct"})) \
        is None
    assert price_for("gpt-4o-mini", endpoint=remote.model_copy(update={"model": "gpt-4o-mini"})) == \
        PRICES["gpt-4o-mini"]
    # Local endpoints are free unless a price is configured, whatever the model is called.
    for url in ("http://localhost:11434/v1", "http://127.0.0.1:8000/v1", "http://[::1]:8000/v1",
                "http://user:pw@127.0.0.2:1/v1"):
        local = EndpointConfig(base_url=url, model="gpt-4o-2024-05-13")
        assert price_for(local.model, endpoint=local) == (0.0, 0.0), url
    tf = EndpointConfig(kind="transformers", local_path="/m", model="Qwen2-VL-7B-Instruct")
    assert price_for(tf.model, endpoint=tf) == (0.0, 0.0)
    # Configured prices win: the endpoint's own, then [prices].
    priced = remote.model_copy(update={"price_input_per_mtok": 0.2, "price_output_per_mtok": 0.6})
    assert price_for("qwen2.5:7b", endpoint=priced) == (0.2, 0.6)
    assert price_for("qwen2.5:7b", endpoint=remote, overrides={"qwen2.5:7b": (0.1, 0.3)}) == (0.1, 0.3)
    local = EndpointConfig(base_url="http://localhost:4000/v1", model="gpt-4o")
    assert price_for("gpt-4o", endpoint=local, overrides={"gpt-4o": (2.5, 10.0)}) == (2.5, 10.0)
    # No endpoint at all: the table, else unknown.
    assert price_for("gpt-4o") == PRICES["gpt-4o"] and price_for("llama3") is None


def test_cost_usd_is_none_for_an_unknown_price():
    assert cost_usd(None, 1000, 1000) is None
    assert cost_usd((1.0, 2.0), 1000, 1000) == pytest.approx(0.003)
    assert cost_usd((0.0, 0.0), 1000, 1000) == 0.0
    assert is_local_url("http://localhost:1/v1") and is_local_url("http://127.9.9.9/v1")
    assert not is_local_url("https://api.openai.com/v1") and not is_local_url(None)


def test_resolved_endpoints_price_local_servers_at_zero_and_unknown_models_at_none(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    ep = resolve_endpoint(Config(), "default")   # default model name is a gpt-4o snapshot; the server is local
    assert ep.price == (0.0, 0.0)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://llm.example.org/v1")
    assert resolve_endpoint(Config(), "default", model="qwen2.5:7b").price is None
    assert resolve_endpoint(Config(), "default").price == PRICES["gpt-4o-2024-05-13"]


def test_a_call_at_an_unknown_price_records_cost_none():
    with OpenAIServer(lambda req: Reply("answer", prompt_tokens=10, completion_tokens=5)) as server:
        rec = complete(endpoint(server.base_url, price=None))
    assert rec.status == "ok" and rec.prompt_tokens == 10 and rec.cost_usd is None


# -- 7. a server that is not up costs seconds, not a minute of backoff per row --------------------------------------

def _many(ep: Endpoint, n: int, before=None):
    async def go():
        client = make_client(ep)
        try:
            if before is not None:
                await before(client)
            return await asyncio.gather(*[client.complete([{"role": "user", "content": f"Item {i}"}],
                                                          {"temperature": 0.0}) for i in range(n)])
        finally:
            await client.close()
    return asyncio.run(go())


def test_a_refused_endpoint_gives_up_early_and_says_the_server_may_be_down():
    # Six retries with a 1 s doubling backoff would be about a minute per row; nothing has answered, so each row
    # is tried at most twice.
    recs = _many(endpoint("http://127.0.0.1:9/v1", max_retries=6, retry_base_s=1.0, retry_max_s=60), 8)
    assert all(r.status == "error" for r in recs)
    assert max(r.attempts for r in recs) <= 2
    assert all("is the server up?" in r.error and "127.0.0.1:9" in r.error for r in recs)


def test_after_an_answer_a_lost_connection_gets_the_full_retry_budget():
    async def go():
        # "Connection: close": the client cannot reuse the socket, so a stopped server is a refused connection.
        server = OpenAIServer(lambda req: Reply("ok", headers={"Connection": "close"})).__enter__()
        client = make_client(endpoint(server.base_url, max_retries=3))
        try:
            first = await client.complete(MESSAGES, {"temperature": 0.0})
            server.__exit__(None, None, None)          # the server goes away mid-run (a restart)
            rest = await asyncio.gather(*[client.complete([{"role": "user", "content": f"Item {i}"}],
                                                          {"temperature": 0.0}) for i in range(2)])
            return first, rest
        finally:
            await client.close()

    first, rest = asyncio.run(go())
    assert first.status == "ok"
    assert all(r.status == "error" and r.attempts == 4 and "connection failed" in r.error for r in rest)
    assert all("is the server up?" not in r.error for r in rest)
