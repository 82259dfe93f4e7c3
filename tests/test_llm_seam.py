"""The LLM seam against a real local HTTP server: client, retries, cache, limits, stage runner."""

from __future__ import annotations

import base64
import json
import time

import pytest

from openai_server import OpenAIServer, Reply
from workbench.core.config import EndpointConfig
from workbench.core.errors import ParseFailure, WorkbenchError
from workbench.llm.cache import CallRecord, call_key, storable_messages
from workbench.llm.client import Endpoint, resolve_endpoint
from workbench.llm.prompts import PromptError, PromptTemplate, split_messages
from workbench.stages.base import LLMStage, reparse
from workbench.stages.dispatch import (
    BatchDispatcher,
    CacheOnly,
    CallPlan,
    LocalDispatcher,
    RunGuard,
    pick,
    using,
)

pytestmark = pytest.mark.timeout(60)

ECHO = PromptTemplate.from_text("[system]\nYou answer briefly.\n[user]\nItem {{ item }}", path="echo.j2")


class EchoStage(LLMStage):
    name = "echo"
    prompt = ECHO
    params = {"temperature": 0.0}

    def __init__(self, parser=None):
        self.parser = parser

    def parse(self, raw, row):
        if self.parser:
            return self.parser(raw, row)
        if not raw.startswith("answer"):
            raise ParseFailure(f"unexpected reply {raw!r}")
        return raw.upper()


def endpoint(server, **kw) -> Endpoint:
    cfg = EndpointConfig(base_url=server.base_url, model="test-model", retry_base_s=0.01, retry_max_s=0.05,
                         **{"max_retries": 3, "timeout_s": 5, **kw})
    return Endpoint("test", cfg, (1.0, 2.0))


def item_of(req) -> str:
    return req.text.rsplit("Item ", 1)[1]


def test_prompt_roles_and_strict_variables():
    msgs = ECHO.render(item="7")
    assert msgs == [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Item 7"}]
    assert split_messages("no markers") == [{"role": "user", "content": "no markers"}]
    with pytest.raises(PromptError, match="echo.j2.*item"):
        ECHO.render(other=1)
    with pytest.raises(PromptError, match="line 1"):
        PromptTemplate.from_text("{% for x in %}", path="bad.j2")


def _png_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def test_image_parts_key_by_content_not_base64(tmp_path):
    a = tmp_path / "a.png"
    a.write_bytes(b"\x89PNG fake image bytes A")
    b = tmp_path / "b.png"
    b.write_bytes(b"\x89PNG fake image bytes B")
    url_a = _png_url(a)
    assert url_a.startswith("data:image/png;base64,")
    msgs_a = ECHO.render(images=[url_a], item="1")
    assert msgs_a[-1]["content"][1]["image_url"]["url"] == url_a
    # Same bytes under another MIME label: same content, same key.
    same = "data:image/x-png;base64," + base64.b64encode(a.read_bytes()).decode()
    assert call_key("m", msgs_a, {}) == call_key("m", ECHO.render(images=[same], item="1"), {})
    assert call_key("m", msgs_a, {}) != call_key("m", ECHO.render(images=[_png_url(b)], item="1"), {})
    stored = json.dumps(storable_messages(msgs_a))
    assert "base64" not in stored and "sha256:" in stored


def test_client_retries_honour_retry_after_and_record_failures(ws):
    def script(req):
        item = item_of(req)
        if item == "429" and req.attempt == 1:
            return Reply(status=429, headers={"Retry-After": "0.4"})
        if item == "500" and req.attempt <= 2:
            return Reply(status=500)
        if item == "length":
            return Reply("answer cut", finish_reason="length")
        if item == "filter":
            return Reply("", finish_reason="content_filter")
        if item == "hang":
            return Reply(hang=True, hang_s=10)
        if item == "400":
            return Reply(status=400, text="bad request")
        return Reply(f"answer {item}")

    rows = [{"item": i} for i in ("ok", "429", "500", "length", "filter", "hang", "400")]
    with OpenAIServer(script) as server:
        ep = endpoint(server, timeout_s=0.5, max_retries=2)
        outcomes = {}
        t0 = time.monotonic()
        rep = EchoStage().run(ws, rows, endpoint=ep, progress=False, max_failure_rate=1.0,
                        on_result=lambda oc: outcomes.__setitem__(oc.row["item"], oc))
        assert time.monotonic() - t0 >= 0.4  # waited out the Retry-After
    assert outcomes["ok"].value == "ANSWER OK" and outcomes["ok"].record.attempts == 1
    assert outcomes["429"].ok and outcomes["429"].record.attempts == 2
    assert outcomes["500"].ok and outcomes["500"].record.attempts == 3
    length = outcomes["length"].record
    assert length.status == "error" and length.finish_reason == "length" and "cut off" in length.error
    assert length.raw_text == "answer cut"  # the raw reply is kept beside the failure
    assert "content filter" in outcomes["filter"].record.error
    assert "timeout" in outcomes["hang"].record.error and outcomes["hang"].record.attempts == 3
    assert "HTTP 400" in outcomes["400"].record.error and outcomes["400"].record.attempts == 1
    assert (rep.ok, rep.call_failed, rep.called) == (3, 4, 7)
    # Every call is stored, failures included, with tokens, cost and latency for the answers.
    rows_db = {r["key"]: r for r in ws.store.query("SELECT * FROM llm_calls")}
    assert len(rows_db) == 7
    ok = rows_db[outcomes["ok"].key]
    assert ok["status"] == "ok" and ok["prompt_tokens"] > 0 and ok["cost_usd"] > 0 and ok["latency_s"] > 0
    assert json.loads(ok["raw_response"])["choices"][0]["message"]["content"] == "answer ok"


def test_rerun_uses_cache_and_parser_change_reparses_without_calls(ws):
    with OpenAIServer(lambda req: Reply(f"answer {item_of(req)}")) as server:
        ep = endpoint(server)
        rows = [{"item": str(i)} for i in range(30)] + [{"item": "0"}]  # a repeated row is one call
        first = EchoStage().run(ws, rows, endpoint=ep, progress=False)
        assert first.called == 30 and first.ok == 31 and len(server.requests) == 30
        again = EchoStage().run(ws, rows, endpoint=ep, progress=False)
        assert again.called == 0 and again.cached == 31 and len(server.requests) == 30
        seen = []
        rep = reparse(ws, EchoStage(parser=lambda raw, row: raw[::-1]), rows[:3], endpoint=ep,
                      on_result=lambda oc: seen.append(oc.value))
        assert seen == ["0 rewsna", "1 rewsna", "2 rewsna"] and rep.called == 0
        assert len(server.requests) == 30
        # A new row in cache-only mode is reported, not called.
        rep = reparse(ws, EchoStage(), [{"item": "new"}], endpoint=ep)
        assert rep.not_run == 1 and len(server.requests) == 30


def test_concurrency_cap_and_request_rate_limit(ws):
    with OpenAIServer(lambda req: Reply(f"answer {item_of(req)}", latency=0.1)) as server:
        rep = EchoStage().run(ws, [{"item": str(i)} for i in range(24)],
                        endpoint=endpoint(server, max_concurrency=4), progress=False)
        assert rep.ok == 24 and server.max_in_flight == 4
    with OpenAIServer(lambda req: Reply(f"answer {item_of(req)}")) as server:
        t0 = time.monotonic()
        EchoStage().run(ws, [{"item": f"r{i}"} for i in range(30)],
                  endpoint=endpoint(server, requests_per_minute=1200), progress=False)
        # 20/s with a one-second burst: the last 10 calls wait about half a second.
        assert time.monotonic() - t0 >= 0.4


def test_failure_rate_stops_the_stage(ws):
    ws.config.limits.min_calls_before_failure_check = 5
    with OpenAIServer(lambda req: Reply(status=400, text="nope")) as server:
        rep = EchoStage().run(ws, [{"item": str(i)} for i in range(200)],
                        endpoint=endpoint(server, max_concurrency=2), progress=False, max_failure_rate=0.5)
    assert rep.stopped and "failure rate" in rep.stopped
    assert rep.called < 20 and rep.not_run > 150
    run = ws.runs("echo")[0]
    assert run["status"] == "stopped"


def test_parse_failures_count_towards_failure_rate(ws):
    ws.config.limits.min_calls_before_failure_check = 5
    with OpenAIServer(lambda req: Reply("gibberish")) as server:
        rep = EchoStage().run(ws, [{"item": str(i)} for i in range(100)],
                        endpoint=endpoint(server, max_concurrency=1), progress=False, max_failure_rate=0.2)
    assert rep.stopped and rep.parse_failed >= 5 and rep.called < 20
    # The raw replies are kept even though they did not parse.
    assert ws.store.scalar("SELECT count(*) FROM llm_calls WHERE raw_text='gibberish'") == rep.called


def test_keys_that_failed_before_are_asked_last_and_cannot_stop_a_resume(ws):
    """40 rows, 4 always answered empty: a first run asks 10 of them (the 4 among them), then a resume with a
    strict failure-rate stop asks the 30 new keys first and the 4 old failures last, uncounted, and names them."""
    ws.config.limits.min_calls_before_failure_check = 4
    bad = {"0", "1", "2", "3"}
    rows = [{"item": str(i)} for i in range(40)]
    with OpenAIServer(lambda req: Reply("" if item_of(req) in bad else f"answer {item_of(req)}")) as server:
        ep = endpoint(server, max_concurrency=1)
        first = EchoStage().run(ws, rows[:10], endpoint=ep, progress=False, max_failure_rate=1.0)
        assert first.call_failed == 4 and first.retried == 0
        asked = len(server.requests)
        rep = EchoStage().run(ws, rows, endpoint=ep, progress=False, max_failure_rate=0.25)
        order = [item_of(r) for r in server.requests[asked:]]
    assert rep.stopped is None and rep.ok == 36 and rep.call_failed == 4
    assert order[-4:] == ["0", "1", "2", "3"] and len(order) == 34   # the old failures last, each asked once
    assert (rep.retried, rep.failed_again, rep.failed_rows) == (4, 4, 4)
    assert [(f["row"], f["again"], f["reply"]) for f in rep.failing] == [(i, True, "") for i in sorted(bad)]
    assert all(f["error"] for f in rep.failing)
    assert "4 asked again after failing in an earlier run, 4 failed again" in rep.summary()
    # A new key that fails still counts: the same rows with every reply empty stop after min_calls new ones.
    with OpenAIServer(lambda req: Reply("")) as server:
        fresh = EchoStage().run(ws, [{"item": f"n{i}"} for i in range(40)],
                                endpoint=endpoint(server, max_concurrency=1), progress=False, max_failure_rate=0.25)
    assert fresh.stopped and "failure rate" in fresh.stopped and fresh.retried == 0


def test_budget_stops_cleanly_and_dry_run_spends_nothing(ws):
    with OpenAIServer(lambda req: Reply("answer", prompt_tokens=1000, completion_tokens=1000)) as server:
        ep = endpoint(server, max_concurrency=1)  # price (1, 2) USD/M: each call costs $0.003
        rows = [{"item": str(i)} for i in range(50)]
        dry = EchoStage().run(ws, rows, endpoint=ep, dry_run=True)
        assert dry.to_call == 50 and dry.est_prompt_tokens > 0 and dry.est_cost_usd > 0
        assert len(server.requests) == 0 and ws.runs("echo") == []
        rep = EchoStage().run(ws, rows, endpoint=ep, budget_usd=0.02, progress=False)
    assert rep.stopped and "budget" in rep.stopped
    assert 0 < rep.called < 50 and rep.cost_usd <= 0.02 + 0.003
    assert ws.store.scalar("SELECT count(*) FROM llm_calls") == rep.called


def test_endpoint_resolution_env_and_config(ws, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ep = resolve_endpoint(ws.config, "default")
    assert ep.base_url == "http://127.0.0.1:9/v1" and ep.api_key() == "EMPTY"
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(WorkbenchError, match="OPENAI_API_KEY"):
        resolve_endpoint(ws.config, "default").api_key()
    with pytest.raises(WorkbenchError, match="no \\[endpoints.other\\]"):
        resolve_endpoint(ws.config, "other")
    (ws.root / "workbench.toml").write_text(
        '[endpoints.local]\nbase_url = "http://127.0.0.1:8/v1"\nmodel = "m1"\napi_key_env = "MY_KEY"\n'
        'price_input_per_mtok = 3\n')
    cfg = ws.reload_config()
    monkeypatch.setenv("MY_KEY", "k-123")
    ep = resolve_endpoint(cfg, "local", model="m2")
    assert (ep.base_url, ep.model, ep.api_key(), ep.price) == ("http://127.0.0.1:8/v1", "m2", "k-123", (3.0, 0.0))


def test_api_key_never_reaches_the_workspace(ws, monkeypatch):
    secret = "sk-test-SECRET-4242"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    def script(req):  # an endpoint that echoes the key in its error, as some do
        if item_of(req) == "2":
            return Reply(status=401, text=f"Incorrect API key provided: {secret}")
        return Reply("answer")

    with OpenAIServer(script) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        ep = resolve_endpoint(ws.config, "default", retry_base_s=0.01)
        rep = EchoStage().run(ws, [{"item": "1"}, {"item": "2"}], endpoint=ep, progress=False)
        assert rep.call_failed == 1 and "***" in rep.errors[0] and secret not in str(rep.as_dict())
        assert server.requests[0].headers.get("authorization") == f"Bearer {secret}"  # it was used
    ws.close()
    for f in ws.root.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


class Canned:
    """An engine without Ray: answers every planned call itself, then hands the records back through the plan."""

    name = "canned"

    def __init__(self):
        self.plans = []

    def dispatch(self, plan: CallPlan) -> None:
        self.plans.append(plan)
        got = [(key, CallRecord(key="", stage="", endpoint=plan.endpoint.name, model=plan.endpoint.model, request="",
                                status="ok", raw_text=f"answer {i}", cost_usd=0.0))
               for i, key in enumerate(plan.pending)]
        plan.commit(got)
        for key, rec in got:
            plan.arrived(key, rec)


def test_an_engine_is_a_dispatcher_and_the_driver_stamps_and_commits(ws):
    ep = Endpoint("test", EndpointConfig(base_url="http://127.0.0.1:9/v1", model="test-model"), (1.0, 2.0))
    rows = [{"item": str(i)} for i in range(5)] + [{"item": "0"}]
    engine = Canned()
    with using(engine):
        rep = EchoStage().run(ws, rows, endpoint=ep, progress=False)
    assert (rep.called, rep.ok, rep.stopped) == (5, 6, None) and len(engine.plans) == 1
    run = ws.runs("echo")[0]
    assert json.loads(run["params"])["engine"] == "canned"
    calls = ws.store.query("SELECT * FROM llm_calls")
    keys = {call_key("test-model", ECHO.render(**r), EchoStage.params) for r in rows}   # the local keys
    assert {r["key"] for r in calls} == keys == set(engine.plans[0].pending)
    for r in calls:   # the one stamp: the fields a local call's record gets
        assert (r["stage"], r["stage_run_id"], r["prompt_file"], r["prompt_hash"]) == ("echo", run["id"], "echo.j2",
                                                                                       ECHO.hash)
        assert r["request"] == engine.plans[0].requests[r["key"]] and r["created_at"]
    again = EchoStage().run(ws, rows, endpoint=ep, progress=False)     # local: everything is in the cache
    assert (again.called, again.cached) == (0, 6)


def test_the_run_guard_words_each_stop_once_and_the_first_stop_wins():
    guard = RunGuard(0.01, 0.5, 2)
    assert guard.reserve(0.006) == 0.006 and guard.reserve(0.006) is None and guard.stopped
    guard.settle(0.006, 0.005)
    assert guard.reason() == ("budget $0.0100: spent $0.0050, and the next call (estimated $0.0060) would go over "
                              "it; raise --budget or limits.budget_usd and run again to go on")
    guard.count(True)
    guard.count(True)
    assert not guard.check_failure_rate(["x"])         # already stopped: the budget stop stays
    ray = RunGuard(0.01, 0.5, 2)
    assert ray.reserve(0.02, calls=16, mean_floor=False) is None
    assert "the next 16 call(s) (estimated $0.0200)" in ray.reason()
    failing = RunGuard(None, 0.5, 2)
    failing.count(True)
    assert not failing.check_failure_rate(["e1"])      # under min_calls
    failing.count(False)
    failing.count(True)
    assert failing.check_failure_rate(["e1", "e2", "e3", "e4"]) and failing.stopped
    assert failing.reason() == "failure rate 2/3 of this run's calls is over 50%; first errors: ['e1', 'e2', 'e3']"
    batch = RunGuard(0.01, 0.5, 2)
    assert batch.fits(0.004) and batch.fits(0.004) and not batch.fits(0.004)
    assert batch.reason() == ("budget $0.0100: submitted the requests estimated to fit (~$0.0080 at batch price); "
                              "raise --budget and run again for the rest")


def test_pick_chooses_one_dispatcher():
    engine = Canned()
    assert isinstance(pick(cache_only=True, batch=True, engine=engine), CacheOnly)
    assert isinstance(pick(cache_only=False, batch=True, engine=engine), BatchDispatcher)
    assert pick(cache_only=False, batch=False, engine=engine) is engine
    assert isinstance(pick(cache_only=False, batch=False, engine=None), LocalDispatcher)
