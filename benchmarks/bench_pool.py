"""Endpoint pool benchmark (about 20 s): two servers with different latencies behind one pool endpoint.

Each server (`benchmarks/fast_openai_server.py`, its own process) answers after a fixed latency; each member
allows `--concurrency` calls in flight. Measured in the same run, through the stage seam (`LLMStage.run`):
the throughput of each server alone, then of the pool over both. Printed: pool / (alone A + alone B),
goal >= 0.9 (least-loaded dispatch keeps both busy, so the fast server takes the larger share).

    .venv/bin/python benchmarks/bench_pool.py [--latency-a 0.1] [--latency-b 0.3] [--concurrency 8] [--seconds 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from workbench.core.workspace import Workspace
from workbench.llm.prompts import PromptTemplate
from workbench.stages.base import LLMStage

PROMPT = PromptTemplate.from_text("[user]\nItem {{ i }} of run {{ run }}", path="bench.j2")


class Bench(LLMStage):
    name = "bench"
    prompt = PROMPT


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "fast_openai_server.py"),
                             "--latency", str(latency)], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def rate(ws, endpoint: str, calls: int, run: str) -> float:
    rows = [{"i": i, "run": run} for i in range(calls)]
    t0 = time.perf_counter()
    rep = Bench().run(ws, rows, endpoint=endpoint, progress=False, max_failure_rate=1.0)
    dt = time.perf_counter() - t0
    assert rep.called == calls and rep.ok == calls, rep.summary()
    return calls / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency-a", type=float, default=0.1)
    ap.add_argument("--latency-b", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=4.0, help="about how long each measurement runs")
    a = ap.parse_args()
    procs = []
    try:
        (pa, url_a), (pb, url_b) = start_server(a.latency_a), start_server(a.latency_b)
        procs = [pa, pb]
        with tempfile.TemporaryDirectory() as tmp:
            ws = Workspace.init(Path(tmp) / "ws")
            member = "max_concurrency = {c}\nmax_retries = 0\ntimeout_s = 30\nmodel = \"bench-model\"\n"
            (ws.root / "workbench.toml").write_text((ws.root / "workbench.toml").read_text() + f"""
[endpoints.a]
base_url = "{url_a}"
{member.format(c=a.concurrency)}
[endpoints.b]
base_url = "{url_b}"
{member.format(c=a.concurrency)}
[endpoints.both]
model = "bench-model"
pool = ["a", "b"]
""")
            ws = Workspace.open(ws.root)
            ideal_a, ideal_b = a.concurrency / a.latency_a, a.concurrency / a.latency_b
            rate(ws, "a", a.concurrency * 4, "warm-up")
            ra = rate(ws, "a", int(ideal_a * a.seconds), "a")
            rb = rate(ws, "b", int(ideal_b * a.seconds), "b")
            rp = rate(ws, "both", int((ra + rb) * a.seconds), "pool")
            print(f"server A alone ({a.latency_a * 1000:.0f} ms, {a.concurrency} in flight): {ra:7.1f} calls/s "
                  f"(ideal {ideal_a:.0f})")
            print(f"server B alone ({a.latency_b * 1000:.0f} ms, {a.concurrency} in flight): {rb:7.1f} calls/s "
                  f"(ideal {ideal_b:.0f})")
            print(f"pool of A and B:                           {rp:7.1f} calls/s")
            print(f"pool / (A + B) = {rp / (ra + rb):.3f}   (goal >= 0.9)")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
