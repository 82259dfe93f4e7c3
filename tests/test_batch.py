"""The OpenAI Batch API behind the stage loop, against a local fake of /v1/files and /v1/batches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from fake_batch_server import EXPIRE, FakeBatchServer
from test_vision_stages import image_index, make_workspace, script
from workbench.core.workspace import Workspace
from workbench.llm.batch import split_lines
from workbench.taxonomy.model import Taxonomy

pytestmark = pytest.mark.timeout(90)

PRICE = (2.0, 4.0)     # USD per million tokens, list price


def batch_workspace(tmp_path, url, **batch) -> Workspace:
    ws = make_workspace(tmp_path, url)
    toml = ws.root / "workbench.toml"
    text = toml.read_text().replace('model = "vlm"\n', f'model = "vlm"\nprice_input_per_mtok = {PRICE[0]}\n'
                                    f'price_output_per_mtok = {PRICE[1]}\n', 1)
    settings = {"poll_interval_s": 0.02, **batch}
    text += "\n[batch]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    toml.write_text(text)
    return Workspace.open(ws.root)


def list_cost(rec) -> float:
    return (rec["prompt_tokens"] * PRICE[0] + rec["completion_tokens"] * PRICE[1]) / 1e6


def test_split_at_requests_and_bytes():
    lines = [(f"k{i}", b"x" * 10) for i in range(7)]
    assert [len(c) for c in split_lines(lines, 3, 1000)] == [3, 3, 1]
    assert [len(c) for c in split_lines(lines, 100, 25)] == [2, 2, 2, 1]
    from workbench.core.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="max_bytes_per_file"):
        split_lines([("big", b"x" * 50)], 10, 20)


def test_a_batch_run_fills_the_same_cache_rows_as_live_calls(tmp_path):
    from workbench.stages.filter.stage import run_filter

    with FakeBatchServer(script) as server:
        ws = batch_workspace(tmp_path, server.base_url, max_requests_per_file=4)
        dry = run_filter(ws, dry_run=True, batch=True)
        live_dry = run_filter(ws, dry_run=True)
        assert dry.est_cost_usd == pytest.approx(live_dry.est_cost_usd / 2) and "at batch price" in dry.summary()
        rep = run_filter(ws, batch=True, progress=False)
        assert rep.called == 6 and rep.parse_failed == 0 and rep.batch
        # Split at 4 requests per file: two batches, each request in exactly one.
        assert [len(ids) for _, ids in server.created] == [4, 2]
        assert sorted(server.submitted_ids) == sorted(set(server.submitted_ids))
        line = json.loads(server.files[server.batches[server.created[0][0]]["input_file_id"]]["data"]
                          .decode().splitlines()[0])
        assert line["method"] == "POST" and line["url"] == "/v1/chat/completions" and line["body"]["model"] == "vlm"
        parts = [p for m in line["body"]["messages"] if isinstance(m["content"], list) for p in m["content"]]
        assert any(p.get("image_url", {}).get("url", "").startswith("data:image/png;base64,") for p in parts)
        # Same results as the live pipeline's test; raw text and response kept; half the list price.
        kept = ws.store.query("SELECT image_id, label FROM filter_decisions WHERE kept=1 ORDER BY image_id, label")
        assert len(kept) == 6
        rows = ws.store.query("SELECT key, raw_text, raw_response, prompt_tokens, completion_tokens, cost_usd, "
                              "status FROM llm_calls WHERE stage='filter'")
        assert len(rows) == 6 and all(r["status"] == "ok" and r["raw_text"] for r in rows)
        assert all(json.loads(r["raw_response"])["object"] == "chat.completion" for r in rows)
        assert all(r["cost_usd"] == pytest.approx(list_cost(r) / 2) for r in rows)
        assert rep.cost_usd == pytest.approx(sum(r["cost_usd"] for r in rows))
        assert set(server.submitted_ids) == {r["key"] for r in rows}
        # A later live run finds every answer in the cache (the fake serves no chat completions at all).
        again = run_filter(ws, progress=False)
        assert again.cached == 6 and again.called == 0 and again.call_failed == 0
        states = [r[0] for r in ws.store.query("SELECT status FROM llm_batches")]
        assert states == ["completed", "completed"]
        r = run_cli("batches", ws.root)
        assert r.code == 0 and r.out.count("completed") == 2 and "results in the workspace" in r.out


def test_expired_lines_are_sent_once_more_then_stored_as_failures(tmp_path):
    from workbench.stages.filter.stage import run_filter

    seen: dict[int, int] = {}

    def expiring(req):
        i = image_index(req)
        seen[i] = seen.get(i, 0) + 1
        if i == 2 and seen[i] == 1:
            return EXPIRE          # expires once, answered on the second try
        if i == 5:
            return EXPIRE          # expires every time
        return script(req)

    with FakeBatchServer(expiring) as server:
        ws = batch_workspace(tmp_path, server.base_url)
        rep = run_filter(ws, batch=True, progress=False)
        assert [len(ids) for _, ids in server.created] == [6, 2]        # attempt 2 = the two expired lines
        assert rep.called == 6 and rep.call_failed == 1 and rep.ok == 5
        err = ws.store.one("SELECT key, status, error FROM llm_calls WHERE status='error'")
        assert "batch_expired" in err["error"] and "sent twice" in err["error"]
        assert [r[0] for r in ws.store.query("SELECT attempt FROM llm_batches ORDER BY id")] == [1, 2]
        assert [r[0] for r in ws.store.query("SELECT status FROM llm_batches ORDER BY id")] == ["expired", "expired"]
        # The next run asks again only for the failed one.
        rep = run_filter(ws, batch=True, progress=False)
        assert rep.cached == 5 and len(server.created) == 4 and server.created[2][1] == [err["key"]]


def test_a_batch_that_fails_validation_is_resubmitted_once(tmp_path):
    from workbench.stages.filter.stage import run_filter

    with FakeBatchServer(script) as server:
        ws = batch_workspace(tmp_path, server.base_url)
        server.fail_validation = 1
        rep = run_filter(ws, batch=True, progress=False)
        assert rep.called == 6 and rep.ok == 6 and len(server.created) == 2
        err = ws.store.scalar("SELECT error FROM llm_batches WHERE status='failed'")
        assert "scripted validation failure" in err
        assert len(server.lines_answered) == 6


def _start_cli(ws, *args) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("workbench")
    return subprocess.Popen([str(exe), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "WORKBENCH_NO_LOCAL_PROBE": "1"}, stdin=subprocess.DEVNULL)


def _wait(cond, timeout=30.0):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_killed_while_polling_a_restart_ingests_every_result_once_and_pays_once(tmp_path):
    with FakeBatchServer(script) as server:
        ws = batch_workspace(tmp_path, server.base_url, max_requests_per_file=4)
        server.hold = True
        proc = _start_cli(ws, "filter", ws.root, "--batch")
        try:
            _wait(lambda: len(server.created) == 2 and server.retrieves >= 6)   # both submitted, polling
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        assert ws.store.scalar("SELECT count(*) FROM llm_calls") == 0
        assert ws.store.scalar("SELECT count(*) FROM llm_batches WHERE batch_id IS NOT NULL") == 2
        server.hold = False
        r = run_cli("filter", ws.root, "--batch")
        assert r.code == 0, r.err
        assert "already in 2 submitted batch(es)" in r.err
        # Submitted once, answered (billed) once, stored once.
        assert len(server.created) == 2 and len(server.submitted_ids) == 6 == len(set(server.submitted_ids))
        assert sorted(server.lines_answered) == sorted(server.submitted_ids)
        rows = ws.store.query("SELECT key, cost_usd, prompt_tokens, completion_tokens FROM llm_calls")
        assert len(rows) == 6 and {x["key"] for x in rows} == set(server.submitted_ids)
        assert sum(x["cost_usd"] for x in rows) == pytest.approx(sum(list_cost(x) for x in rows) / 2)
        assert ws.store.scalar("SELECT count(*) FROM llm_batches WHERE ingested_at IS NOT NULL") == 2
        assert ws.store.scalar("SELECT count(*) FROM filter_decisions WHERE kept=1") == 6
        # A third run: all cached, nothing submitted.
        r = run_cli("filter", ws.root, "--batch")
        assert r.code == 0 and len(server.created) == 2


def test_cancel_leaves_the_rest_for_the_next_run(tmp_path):
    with FakeBatchServer(script) as server:
        ws = batch_workspace(tmp_path, server.base_url)
        server.hold = True
        proc = _start_cli(ws, "filter", ws.root, "--batch")
        try:
            _wait(lambda: len(server.created) == 1 and server.retrieves >= 3)
            bid = server.created[0][0]
            r = run_cli("batches", ws.root, "--cancel", bid)
            assert r.code == 0 and "cancelling" in r.out, r.err
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert "cancelled" in err and "6 not run" in out
        r = run_cli("batches", ws.root, "--cancel", bid)
        assert r.code == 2 and "already cancelled" in r.err
        r = run_cli("batches", ws.root, "--cancel", "nope")
        assert r.code == 2 and "no batch 'nope'" in r.err
        server.hold = False
        r = run_cli("filter", ws.root, "--batch")
        assert r.code == 0 and len(server.created) == 2 and "6 called" in r.out


def test_batch_needs_a_plain_openai_endpoint(tmp_path):
    from workbench.core.errors import WorkbenchError
    from workbench.stages.filter.stage import run_filter

    ws = batch_workspace(tmp_path, "http://127.0.0.1:9/v1")
    toml = ws.root / "workbench.toml"
    toml.write_text(toml.read_text() + '\n[endpoints.both]\nmodel = "vlm"\npool = ["judge_a", "judge_b"]\n')
    ws = Workspace.open(ws.root)
    with pytest.raises(WorkbenchError, match="'both' is a pool"):
        run_filter(ws, batch=True, endpoint="both", progress=False)


def test_a_batch_created_but_never_written_down_is_found_by_its_token(tmp_path):
    """Killed between `batches.create` and storing its id: the restart adopts the batch, never pays twice."""
    from workbench.stages.filter.stage import run_filter

    with FakeBatchServer(script) as server:
        ws = batch_workspace(tmp_path, server.base_url)
        server.hold = True
        proc = _start_cli(ws, "filter", ws.root, "--batch")
        try:
            _wait(lambda: len(server.created) == 1 and server.retrieves >= 2)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        with ws.store.write() as c:   # as if the process had died before the UPDATE that stores the id
            c.execute("UPDATE llm_batches SET batch_id=NULL, status='submitting'")
        server.hold = False
        rep = run_filter(ws, batch=True, progress=False)
        assert rep.called == 6 and len(server.created) == 1 and len(server.lines_answered) == 6
        # And a plan whose file was never uploaded is dropped and sent anew (nothing was paid for it).
        with ws.store.write() as c:
            c.execute("DELETE FROM llm_calls")
            c.execute("INSERT INTO llm_batches(token, endpoint, model, stage, status, n_requests, created_at, "
                      "updated_at) VALUES ('t0', 'default', 'vlm', 'filter', 'submitting', 6, 'now', 'now')")
            bid = c.execute("SELECT max(id) FROM llm_batches").fetchone()[0]
            c.execute("INSERT INTO llm_batch_requests(batch, key, request) SELECT ?, key, request FROM "
                      "llm_batch_requests WHERE batch=1", (bid,))
        rep = run_filter(ws, batch=True, progress=False)
        assert rep.called == 6 and len(server.created) == 2
        assert ws.store.scalar("SELECT count(*) FROM llm_batches WHERE token='t0'") == 0


def test_expand_batch_from_the_cli(seeded_ws, monkeypatch):
    from openai_server import Reply

    def scripted(req):
        if "first-level categories" in req.text:
            return Reply('["Underwater Scenes", "Aerial Photos"]')
        return Reply("[]")

    with FakeBatchServer(scripted) as server:
        ws = seeded_ws
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        (ws.root / "workbench.toml").write_text((ws.root / "workbench.toml").read_text()
                                                + "\n[batch]\npoll_interval_s = 0.02\n")
        r = run_cli("expand", ws.root, "--level", "1", "--batch")
        assert r.code == 0, r.err
        assert len(server.created) == 1 and Taxonomy.of(ws).find("Aerial Photos") is not None
        assert "(batch price)" in r.out
        # Honest progress: the provider's states as they came.
        for state in ("submitted 1 request(s)", "validating", "in progress", "finalizing", "completed"):
            assert state in r.err
        run = Workspace.open(ws.root).runs("expand")[0]
        assert json.loads(run["params"])["batch"] is True


def test_a_batch_over_budget_submits_what_fits_and_says_so(tmp_path):
    from workbench.stages.filter.stage import run_filter

    with FakeBatchServer(script) as server:
        ws = batch_workspace(tmp_path, server.base_url)
        one = run_filter(ws, dry_run=True, batch=True).est_cost_usd / 6
        rep = run_filter(ws, batch=True, progress=False, budget_usd=one * 3.5)
        assert len(server.submitted_ids) == 3 and rep.called == 3 and rep.not_run == 3
        assert rep.stopped.startswith("budget") and "batch price" in rep.stopped
        assert ws.store.one("SELECT status FROM stage_runs ORDER BY id DESC LIMIT 1")[0] == "stopped"


def test_adaptive_referees_in_batches(tmp_path):
    """Each referee's batch finishes before the next referee's rows are chosen: the third is asked only where
    the first two left the outcome open."""
    import test_adaptive_referees as ta
    from workbench.stages.referee.stage import run_referees

    with FakeBatchServer(ta.script) as server:
        ws = ta.make_workspace(tmp_path / "ws", server.base_url, audit_fraction=0.0)
        toml = ws.root / "workbench.toml"
        toml.write_text(toml.read_text() + "\n[batch]\npoll_interval_s = 0.02\n")
        ws = Workspace.open(ws.root)
        reps = run_referees(ws, adaptive=True, batch=True, progress=False)
        sizes = [len(ids) for _, ids in server.created]
        assert sizes[:2] == [ta.N_SAMPLES, ta.N_SAMPLES] and 0 < sizes[2] < ta.N_SAMPLES
        assert [r.called for r in reps] == sizes and all(r.batch for r in reps)
        votes = ta.votes_by_sample(ws)
        assert all(("c" in v) == (v["a"] != v["b"] and 1 in (v["a"], v["b"])) for v in votes.values())
