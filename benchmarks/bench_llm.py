"""LLM seam benchmark (about a minute): throughput against a 200 ms server, and a fully cached re-run.

1. Throughput: a local OpenAI-compatible server answers every call after 200 ms; the stage
   runs with 64 calls in flight. Ideal = in flight / latency = 320 calls/s; printed as a fraction
   of ideal (goal >= 0.9). Baseline in the same run: the bare openai client against the same server
   (on a busy 2-core machine the client's own CPU cost, not the seam, is what caps the rate).
2. Cached re-run: 10,000 answered calls in the cache; running the stage again renders, keys,
   looks up and parses all of them without calling (goal <= 3 s). Baseline measured in the same
   run: rendering and keying the same rows alone.

    .venv/bin/python benchmarks/bench_llm.py [--calls 3200] [--cached 10000] [--server fast|test]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from workbench.core.clock import utcnow
from workbench.core.config import EndpointConfig
from workbench.core.workspace import Workspace
from workbench.llm.cache import CallCache, CallRecord, call_key, request_json
from workbench.llm.client import Endpoint
from workbench.llm.prompts import PromptTemplate
from workbench.stages.base import LLMStage

PROMPT = PromptTemplate.from_text("[system]\nYou are terse.\n[user]\nName three subtasks of task {{ i }}.",
                                  path="bench.j2")


class Bench(LLMStage):
    name = "bench"
    prompt = PROMPT
    params = {"temperature": 0.0}

    def parse(self, raw, row):
        return raw.split(",")


async def _bare_openai(base_url: str, n: int, in_flight: int) -> float:
    """Calls/s of the openai client alone: what the machine allows before the seam adds anything."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    sem = asyncio.Semaphore(in_flight)

    async def one(i):
        async with sem:
            await client.chat.completions.create(model="bench-model",
                                                 messages=[{"role": "user", "content": f"bare {i}"}])

    await asyncio.gather(*(one(i) for i in range(in_flight)))  # warm-up
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    dt = time.perf_counter() - t0
    await client.close()
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3200)
    ap.add_argument("--server", choices=("fast", "test"), default="fast",
                    help="fast: benchmarks/fast_openai_server.py (default); test: tests/openai_server.py")
    ap.add_argument("--cached", type=int, default=10_000)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--in-flight", type=int, default=64)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_llm_"))
    ws = Workspace.init(tmp / "ws")

    # The server runs in its own process, as a real endpoint would (not on this process's GIL). It is the
    # single-event-loop benchmark server: the threaded test server itself caps out near 250 calls/s here,
    # which would measure the server rather than the seam (`--server test` to see that).
    script = "tests/openai_server.py" if a.server == "test" else "benchmarks/fast_openai_server.py"
    server = subprocess.Popen([sys.executable, str(REPO / script), "--latency",
                               str(a.latency), "--reply", "a, b, c"], stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()
        ep = Endpoint("bench", EndpointConfig(base_url=base_url, model="bench-model",
                                              max_concurrency=a.in_flight, timeout_s=30), (0.0, 0.0))
        # Warm-up (connections, imports) outside the timing.
        Bench().run(ws, [{"i": f"w{i}"} for i in range(a.in_flight)], endpoint=ep, progress=False)
        t0 = time.perf_counter()
        rep = Bench().run(ws, [{"i": i} for i in range(a.calls)], endpoint=ep, progress=False)
        dt = time.perf_counter() - t0
        assert rep.ok == a.calls, rep.summary()
        ideal = a.in_flight / a.latency
        bare = asyncio.run(_bare_openai(base_url, a.calls, a.in_flight))
        print(f"throughput: {a.calls} calls in {dt:.2f}s = {a.calls / dt:.0f} calls/s; ideal {ideal:.0f} calls/s "
              f"({a.in_flight} in flight / {a.latency * 1000:.0f} ms); fraction of ideal = "
              f"{a.calls / dt / ideal:.2f} (goal >= 0.9)")
        print(f"baseline: the bare openai client, same server and concurrency, no cache/limits: {bare:.0f} calls/s "
              f"= {bare / ideal:.2f} of ideal; seam / bare client = {a.calls / dt / bare:.2f}")
    finally:
        server.terminate()
        server.wait(10)

    # Fill the cache with 10,000 answered calls, as a finished run would leave it.
    rows = [{"i": f"c{i}"} for i in range(a.cached)]
    t0 = time.perf_counter()
    keyed = []
    for r in rows:
        msgs = PROMPT.render(**r)
        keyed.append((call_key(ep.model, msgs, Bench.params), msgs))
    t_key = time.perf_counter() - t0
    now = utcnow()
    CallCache(ws.store).put_many(
        CallRecord(key=k, stage="bench", endpoint="bench", model=ep.model,
                   request=request_json(ep.model, m, Bench.params), status="ok", raw_text="a, b, c",
                   raw_response="{}", finish_reason="stop", prompt_tokens=20, completion_tokens=5, cost_usd=0.0,
                   latency_s=0.2, created_at=now) for k, m in keyed)
    got = []
    t0 = time.perf_counter()
    rep = Bench().run(ws, rows, endpoint=ep, progress=False, on_result=got.append)
    dt = time.perf_counter() - t0
    assert rep.called == 0 and rep.cached == a.cached and len(got) == a.cached, rep.summary()
    print(f"cached re-run: {a.cached} calls in {dt:.2f}s (goal <= 3 s), 0 calls made; baseline (render + key "
          f"only) {t_key:.2f}s; ratio to baseline = {dt / t_key:.2f}")
    ws.close()


if __name__ == "__main__":
    main()
