"""Endpoint pools: several servers for one model behind one endpoint name (real client, real HTTP)."""

from __future__ import annotations

import asyncio

import pytest

from openai_server import OpenAIServer, Reply
from workbench.core.config import parse_config
from workbench.core.errors import ConfigError
from workbench.core.workspace import Workspace
from workbench.llm.cache import call_key
from workbench.llm.client import PoolClient, make_client, resolve_endpoint
from workbench.llm.prompts import PromptTemplate
from workbench.stages.base import LLMStage

pytestmark = pytest.mark.timeout(60)

ECHO = PromptTemplate.from_text("[user]\nItem {{ item }}", path="echo.j2")


class Echo(LLMStage):
    name = "echo"
    prompt = ECHO

    def record(self, ws, oc, run):
        run.add("kept")


def pool_config(urls: list[str], **pool_settings) -> str:
    members = "".join(f"""
[endpoints.m{i}]
base_url = "{u}"
max_concurrency = 4
max_retries = 0
timeout_s = 5
""" for i, u in enumerate(urls))
    extra = "".join(f"{k} = {v}\n" for k, v in pool_settings.items())
    return members + f"""
[endpoints.pool]
model = "served"
pool = [{", ".join(f'"m{i}"' for i in range(len(urls)))}]
{extra}"""


def workspace(tmp_path, text: str) -> Workspace:
    ws = Workspace.init(tmp_path / "ws")
    (ws.root / "workbench.toml").write_text((ws.root / "workbench.toml").read_text() + text)
    return Workspace.open(ws.root)


@pytest.mark.parametrize("pool, message", [
    ('["nope"]', "endpoints.pool.pool: 'nope' is not an [endpoints.*] entry"),
    ('["pool"]', "endpoints.pool.pool: 'pool' is itself a pool"),
    ("[]", "endpoints.pool.pool: an empty pool"),
    ('"a"', "endpoints.pool.pool: Input should be a valid list"),
])
def test_a_bad_pool_names_the_field(pool, message):
    import tomllib

    data = tomllib.loads(f'[endpoints.a]\nbase_url = "http://x/v1"\n[endpoints.pool]\npool = {pool}\n')
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("*", r"\*").replace(".", r"\.")):
        parse_config(data)


def test_requests_spread_over_members_and_the_key_ignores_who_answered(tmp_path):
    with OpenAIServer(lambda r: Reply("a", latency=0.02)) as s1, \
            OpenAIServer(lambda r: Reply("b", latency=0.02)) as s2:
        ws = workspace(tmp_path, pool_config([s1.base_url, s2.base_url]))
        ep = resolve_endpoint(ws.config, "pool")
        assert [m.name for m in ep.members] == ["m0", "m1"] and ep.config.max_concurrency == 8
        rows = [{"item": i} for i in range(24)]
        rep = Echo().run(ws, rows, endpoint="pool", progress=False)
        assert rep.called == 24 and rep.ok == 24
        # Both servers answered, each under the pool's model name.
        assert s1.requests and s2.requests and len(s1.requests) + len(s2.requests) == 24
        assert {r.model for r in s1.requests + s2.requests} == {"served"}
        # The cache key is the pool's model + messages + params, and the stored row names the pool.
        msgs = ECHO.render(item=3)
        key = call_key("served", msgs, {})
        row = ws.store.one("SELECT endpoint, model FROM llm_calls WHERE key=?", (key,))
        assert tuple(row) == ("pool", "served")
        # A second run finds everything in the cache, whichever member answered.
        rep2 = Echo().run(ws, rows, endpoint="pool", progress=False)
        assert rep2.cached == 24 and rep2.called == 0
        params = ws.store.scalar("SELECT params FROM stage_runs ORDER BY id LIMIT 1")
        assert s1.base_url in params and s2.base_url in params


def test_a_failing_member_is_set_aside_and_retried_later(tmp_path):
    state = {"down": True}

    def flaky(req):
        return Reply(status=503) if state["down"] else Reply("up")

    with OpenAIServer(flaky) as bad, OpenAIServer(lambda r: Reply("ok")) as good:
        text = pool_config([bad.base_url, good.base_url], pool_failures=2, pool_cooldown_s=30)
        ws = workspace(tmp_path, text)
        ep = resolve_endpoint(ws.config, "pool")

        async def go(n, start=0):
            client = make_client(ep)
            assert isinstance(client, PoolClient)
            try:
                recs = [await client.complete(ECHO.render(item=i), {}) for i in range(start, start + n)]
            finally:
                await client.close()
            return recs, client

        recs, client = asyncio.run(go(10))
        # Every call succeeded (a failed one is re-sent to the other member); the bad member was asked only
        # until it was set aside.
        assert all(r.ok for r in recs)
        assert len(bad.requests) == 2
        assert client.calls_per_member["m1"] == 10

        async def later():
            client = make_client(ep)
            member = client.members[0]
            member.aside_until = 0.0   # as if the cool-down had passed
            state["down"] = False
            try:
                rec = await client.complete(ECHO.render(item=99), {})
            finally:
                await client.close()
            return rec, client

        rec, client = asyncio.run(later())
        # Retried after its pause: a healthy member with nothing in flight is picked first (lowest load, ties
        # go to the first listed).
        assert rec.ok and client.calls_per_member["m0"] == 1 and len(bad.requests) == 3


def test_the_pause_ends_by_itself(tmp_path):
    import time

    state = {"down": True}
    with OpenAIServer(lambda r: Reply(status=500) if state["down"] else Reply("ok")) as bad, \
            OpenAIServer(lambda r: Reply("ok")) as good:
        ws = workspace(tmp_path, pool_config([bad.base_url, good.base_url], pool_failures=1,
                                             pool_cooldown_s=0.2))
        ep = resolve_endpoint(ws.config, "pool")

        async def go():
            client = make_client(ep)
            try:
                await client.complete(ECHO.render(item=1), {})      # bad fails once -> set aside
                n = len(bad.requests)
                await client.complete(ECHO.render(item=2), {})      # goes to good only
                assert len(bad.requests) == n
                state["down"] = False
                time.sleep(0.25)
                await client.complete(ECHO.render(item=3), {})      # bad is healthy again and least loaded
                return client.calls_per_member
            finally:
                await client.close()

        calls = asyncio.run(go())
        assert calls["m0"] == 2 and len(bad.requests) == 2
