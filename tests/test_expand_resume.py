"""Kill-and-resume: a `workbench expand` process killed halfway through 1,000 parents, then run again."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openai_server import OpenAIServer, Reply
from workbench.core.workspace import Workspace
from workbench.taxonomy.io import import_taxonomy
from workbench.taxonomy.model import Taxonomy

N = 1000


def parent_of(req) -> str:
    return req.text.split("Category: ", 1)[1].splitlines()[0]


@pytest.mark.timeout(180)
def test_kill_halfway_and_resume(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    src = tmp_path / "parents.txt"
    src.write_text("".join(f"Domain {i:04d}\n" for i in range(N)))
    import_taxonomy(Taxonomy.of(ws), src)
    ws.close()

    def script(req):
        p = parent_of(req)
        return Reply(f'["{p} part one", "{p} part two", "{p} part one"]', latency=0.01)

    exe = Path(sys.executable).with_name("workbench")
    with OpenAIServer(script) as server:
        env = {**os.environ, "OPENAI_BASE_URL": server.base_url}
        cmd = [str(exe), "expand", str(ws.root), "--level", "2", "--no-progress"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len(server.requests) < N // 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"finished before it could be killed: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.2)  # let requests in flight reach the server

        ws = Workspace.open(tmp_path / "ws")
        answered_keys = {r[0] for r in ws.store.query("SELECT key FROM llm_calls WHERE status='ok'")}
        answered = {r[0] for r in ws.store.query(
            "SELECT json_extract(request, '$.messages[1].content') FROM llm_calls WHERE status='ok'")}
        answered = {t.split("Category: ", 1)[1].splitlines()[0] for t in answered}
        applied_before = ws.store.scalar("SELECT count(*) FROM expand_results")
        assert 0 < len(answered) < N and len(answered_keys) == len(answered)
        calls_before = len(server.requests)

        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
        assert res.returncode == 0, res.stderr
        per_parent = collections.Counter(parent_of(r) for r in server.requests)

    # No parent whose answer was stored before the kill was asked again.
    assert all(per_parent[p] == 1 for p in answered), [p for p in answered if per_parent[p] > 1][:5]
    # Nothing lost: every parent answered once it finished, and got its two children exactly once.
    assert set(per_parent) == {f"Domain {i:04d}" for i in range(N)}
    assert len(server.requests) - calls_before <= N - len(answered) + 64  # at most the ones in flight again
    rows = ws.store.query("SELECT parent_id, count(*) AS n FROM nodes WHERE level=2 GROUP BY parent_id")
    assert len(rows) == N and all(r["n"] == 2 for r in rows)
    assert ws.store.scalar("SELECT count(*) FROM expand_results WHERE applied=1 AND status='ok'") == N
    assert ws.store.scalar("SELECT count(DISTINCT parent_id) FROM expand_results") == N
    assert applied_before <= N
    ws.close()
