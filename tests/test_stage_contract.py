"""The stage contract: the base owns the loop and the run record; faults found when it was tried."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from conftest import run_cli
from openai_server import OpenAIServer, Reply
from workbench.core.config import EndpointConfig
from workbench.core.errors import ParseFailure
from workbench.core.runs import StageBusy
from workbench.core.workspace import Workspace
from workbench.llm.client import Endpoint
from workbench.llm.prompts import PromptTemplate
from workbench.stages.base import LLMStage, Stage
from workbench.taxonomy.model import Taxonomy

pytestmark = pytest.mark.timeout(120)

ECHO = PromptTemplate.from_text("[user]\nItem {{ item }}", path="echo.j2")


class Echo(LLMStage):
    name = "echo"
    prompt = ECHO

    def parse(self, raw, row):
        if not raw.startswith("answer"):
            raise ParseFailure(f"unexpected reply {raw!r}")
        return raw

    def record(self, ws, oc, run):
        run.add("kept" if oc.error is None else "dropped")


def endpoint(server, **kw) -> Endpoint:
    cfg = EndpointConfig(base_url=server.base_url, model="m", retry_base_s=0.01, retry_max_s=0.05,
                         **{"max_retries": 1, "timeout_s": 5, **kw})
    return Endpoint("test", cfg, (1.0, 2.0))


def item_of(req) -> str:
    return req.text.rsplit("Item ", 1)[1]


def test_the_loop_and_the_run_record_belong_to_the_base():
    with pytest.raises(TypeError, match="overrides run"):
        class Bad(LLMStage):
            def run(self, ws, rows=None, **kw):
                return None
    with pytest.raises(TypeError, match="overrides run"):
        class BadToo(Stage):
            def run(self, ws):
                return None


def test_parse_failures_are_recorded_by_the_stage_and_counted_once(ws):
    seen = []

    class Keeping(Echo):
        def record(self, ws, oc, run):
            seen.append((oc.row["item"], oc.value, oc.error))
            super().record(ws, oc, run)

    with OpenAIServer(lambda req: Reply("prose" if item_of(req) == "2" else "answer")) as server:
        rep = Keeping().run(ws, [{"item": str(i)} for i in range(4)], endpoint=endpoint(server), progress=False,
                            max_failure_rate=1.0)
    assert sorted(seen) == [("0", "answer", None), ("1", "answer", None), ("2", None, "unexpected reply 'prose'"),
                            ("3", "answer", None)]
    assert (rep.ok, rep.parse_failed, rep.counts) == (3, 1, {"kept": 3, "dropped": 1})
    run = ws.runs("echo")[0]
    assert run["status"] == "done" and json.loads(run["summary"])["counts"] == {"kept": 3, "dropped": 1}


def test_cached_failures_do_not_stop_a_resumed_run(ws):
    """Fault 1: stored replies that do not parse used to count first in the failure-rate check, so a resumed
    run stopped after a handful of new calls and the stage never finished."""
    ws.config.limits.min_calls_before_failure_check = 5
    rows = [{"item": f"bad{i}"} for i in range(10)] + [{"item": str(i)} for i in range(40)]
    with OpenAIServer(lambda req: Reply("prose" if item_of(req).startswith("bad") else "answer")) as server:
        ep = endpoint(server, max_concurrency=1)
        first = Echo().run(ws, rows[:10], endpoint=ep, progress=False, max_failure_rate=1.0)
        assert first.parse_failed == 10
        # The resumed run: 10 stored failures, 40 new calls that all parse.
        rep = Echo().run(ws, rows, endpoint=ep, progress=False, max_failure_rate=0.2)
        assert rep.stopped is None and rep.called == 40 and rep.ok == 40 and rep.parse_failed == 10
        # --refresh-failed asks again exactly for the replies that did not parse.
        before = len(server.requests)
        rep = Echo().run(ws, rows, endpoint=ep, progress=False, max_failure_rate=1.0, refresh_failed=True)
        assert rep.called == 10 and len(server.requests) - before == 10


def test_empty_reply_is_a_failure_and_is_asked_again(ws):
    replies = iter(["", "answer late"])
    with OpenAIServer(lambda req: Reply(next(replies))) as server:
        ep = endpoint(server)
        rep = Echo().run(ws, [{"item": "1"}], endpoint=ep, progress=False, max_failure_rate=1.0)
        assert rep.call_failed == 1 and rep.ok == 0
        rep = Echo().run(ws, [{"item": "1"}], endpoint=ep, progress=False)
        assert rep.called == 1 and rep.ok == 1


def test_a_second_writer_of_the_same_stage_is_refused(ws):
    """Fault 5: two processes running one stage paid for every call twice."""
    with ws.stage_run("echo") as run:
        other = Workspace.open(ws.root)
        with pytest.raises(StageBusy, match=rf"echo is already running .*stage run {run.id}, pid {os.getpid()}"):
            with other.stage_run("echo"):
                pass
        with other.stage_run("select"):     # another stage is fine
            pass
        other.close()
    with ws.stage_run("echo"):              # free again once the first ended
        pass
    assert [r["status"] for r in ws.runs("echo")] == ["done", "done"]


def test_two_expand_processes_do_not_pay_twice(seeded_ws, tmp_path):
    ws = seeded_ws
    started, tried = threading.Event(), threading.Event()

    def script(req):
        started.set()
        tried.wait(60)      # the first process stays in its run until the second has tried (a slow start-up
        return Reply('["alpha", "beta"]')   # on a loaded machine used to find the first one finished)

    with OpenAIServer(script) as server:
        env = {**os.environ, "WORKBENCH_NO_LOCAL_PROBE": "1", "OPENAI_BASE_URL": server.base_url,
               "OPENAI_API_KEY": "x"}
        cmd = [str(Path(sys.executable).with_name("workbench")), "expand", str(ws.root), "--level", "2",
               "--no-progress"]
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert started.wait(60)
        try:
            second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        finally:
            tried.set()
        out, err = first.communicate(timeout=90)
    assert first.returncode == 0, err
    assert second.returncode == 2 and "expand is already running" in second.stderr
    parents = ws.store.scalar("SELECT count(*) FROM nodes WHERE level=1 AND status='accepted'")
    assert len(server.requests) == parents  # each parent asked once


def test_killed_run_is_marked_interrupted_on_the_next_open(ws):
    code = textwrap.dedent(f"""
        import os, signal
        from workbench.core.workspace import Workspace
        ws = Workspace.open({str(ws.root)!r})
        with ws.stage_run("echo"):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert ws.store.scalar("SELECT status FROM stage_runs") == "running"
    again = Workspace.open(ws.root)
    assert again.runs("echo")[0]["status"] == "interrupted"
    with again.stage_run("echo"):           # and the stage is free again
        pass
    again.close()


def test_ctrl_c_marks_the_run_interrupted(ws):
    with pytest.raises(KeyboardInterrupt):
        with ws.stage_run("echo"):
            raise KeyboardInterrupt
    with pytest.raises(ValueError):
        with ws.stage_run("echo"):
            raise ValueError("boom")
    failed, interrupted = ws.runs("echo")
    assert interrupted["status"] == "interrupted"
    assert failed["status"] == "failed" and "boom" in json.loads(failed["summary"])["error"]


def test_expand_skips_a_parent_deleted_while_it_runs(seeded_ws):
    """Fault 3: deleting or rejecting a parent during `expand` aborted the whole stage."""
    ws = seeded_ws
    parents = [r["id"] for r in ws.store.query(
        "SELECT id FROM nodes WHERE level=1 AND status='accepted' ORDER BY position, name")]
    doomed, rejected = parents[-1], parents[-2]
    done = threading.Event()

    def script(req):
        if not done.is_set():       # a curator edits the tree while the first reply is being written
            other = Workspace.open(ws.root)
            Taxonomy.of(other).delete(doomed)
            Taxonomy.of(other).set_status([rejected], "rejected")
            other.close()
            done.set()
        return Reply('["alpha", "beta"]')

    with OpenAIServer(script) as server:
        (ws.root / "workbench.toml").write_text(
            f'[endpoints.default]\nbase_url = "{server.base_url}"\nmodel = "m"\nmax_concurrency = 1\n')
        res = run_cli("expand", ws.root, "--level", "2", "--no-progress")
    assert res.code == 0, res.err
    assert "2 parent(s) skipped because they were deleted or rejected meanwhile" in res.out
    assert "rejected while expanding" in res.err
    added = ws.store.scalar("SELECT count(*) FROM nodes WHERE origin='generated'")
    assert added == 2 * (len(parents) - 2)


def test_expand_does_not_apply_a_reply_asked_under_a_parents_old_name(seeded_ws):
    """A parent renamed after the run planned its call (asked under the old name): its reply is not applied, the
    run says so, and the next run asks under the new name."""
    ws = seeded_ws
    parents = [r["id"] for r in ws.store.query(
        "SELECT id FROM nodes WHERE level=1 AND status='accepted' ORDER BY position, name")]
    renamed = parents[-1]
    done = threading.Event()

    def script(req):
        if not done.is_set():       # a curator renames a parent while the first reply is being written
            with Workspace.open(ws.root) as other:
                Taxonomy.of(other).rename(renamed, "Brand new name")
            done.set()
        return Reply('["alpha", "beta"]')

    with OpenAIServer(script) as server:
        (ws.root / "workbench.toml").write_text(
            f'[endpoints.default]\nbase_url = "{server.base_url}"\nmodel = "m"\nmax_concurrency = 1\n')
        res = run_cli("expand", ws.root, "--level", "2", "--no-progress")
        assert res.code == 0, res.err
        assert "1 parent(s) not applied because they were renamed or moved" in res.out
        assert ws.store.scalar("SELECT count(*) FROM nodes WHERE parent_id=?", (renamed,)) == 0
        n = len(server.requests)
        res = run_cli("expand", ws.root, "--level", "2", "--no-progress")
        assert res.code == 0, res.err
        asked = [r.text for r in server.requests[n:]]
    assert len(asked) == 1 and "Brand new name" in asked[0]
    assert ws.store.scalar("SELECT count(*) FROM nodes WHERE parent_id=?", (renamed,)) == 2


def test_expand_cli_names_the_parents_that_keep_failing(seeded_ws):
    """A parent answered empty every time: each run asks it (after the new ones), names it with its reply, and
    the second run marks it as failing again."""
    ws = seeded_ws
    parents = [r["name"] for r in ws.store.query(
        "SELECT name FROM nodes WHERE level=1 AND status='accepted' ORDER BY position, name")]
    bad = parents[0]

    def script(req):
        return Reply("" if f"Category: {bad}\n" in req.text else '["alpha", "beta"]')

    with OpenAIServer(script) as server:
        (ws.root / "workbench.toml").write_text(
            f'[endpoints.default]\nbase_url = "{server.base_url}"\nmodel = "m"\nmax_concurrency = 1\n')
        first = run_cli("expand", ws.root, "--level", "2", "--no-progress")
        second = run_cli("expand", ws.root, "--level", "2", "--no-progress")
    assert f"  failed: {bad} (key " in first.err and "; reply: ''" in first.err
    assert "1 row(s) failed in this run's calls (0 of them failed in an earlier run too" in first.err
    assert f"  failed again: {bad} (key " in second.err and "--refresh-failed" in second.err
    assert "1 asked again after failing in an earlier run, 1 failed again" in second.out


def test_runs_command_lists_and_marks_runs(ws):
    with ws.stage_run("echo") as run:
        run.add("kept", 3)
    res = run_cli("runs", ws.root)
    assert res.code == 0 and "echo" in res.out and "done" in res.out and "kept 3" in res.out
    with ws.stage_run("filter") as run:
        res = run_cli("runs", ws.root, "--interrupted", str(run.id))
        assert res.code == 0
        res = run_cli("runs", ws.root, "--interrupted", str(run.id))
        assert res.code == 2 and "already interrupted" in res.err


def test_a_filter_that_keeps_nothing_says_so_and_exits_1(tmp_path):
    """Fault 7: the filter kept 0 of 1,020 candidates, exited 0, and its summary never said how many it kept."""
    from test_vision_stages import make_workspace

    with OpenAIServer(lambda req: Reply("None of them fit.")) as server:
        ws = make_workspace(tmp_path, server.base_url)
        res = run_cli("filter", ws.root)
    assert res.code == 1
    assert "kept 0, not kept 18" in res.out     # 6 images x 3 candidates
    assert "nothing for the next stage" in res.err and "workbench rejections" in res.err


def test_a_kill_loses_no_reply_that_reached_the_process(tmp_path):
    """Replies used to wait in memory, uncommitted, while earlier ones were being recorded: a SIGKILL then lost
    paid replies (38 of 402 saved in one measured run). Every arrived reply is committed before the next record."""
    ws = Workspace.init(tmp_path / "ws")
    ws.close()
    with OpenAIServer(lambda req: Reply("answer")) as server:
        code = textwrap.dedent(f"""
            import os, signal, time
            from workbench.core.config import EndpointConfig
            from workbench.llm.client import Endpoint
            from workbench.llm.prompts import PromptTemplate
            from workbench.stages.base import LLMStage
            from workbench.core.workspace import Workspace

            class Slow(LLMStage):
                name = "slow"
                prompt = PromptTemplate.from_text("[user]\\nItem {{{{ item }}}}", path="slow.j2")
                def record(self, ws, oc, run):
                    time.sleep(0.3)                      # a slow write: the other replies arrive meanwhile
                    run.add("n")
                    if run.counts["n"] == 3:
                        os.kill(os.getpid(), signal.SIGKILL)

            ws = Workspace.open({str(ws.root)!r})
            ep = Endpoint("t", EndpointConfig(base_url={server.base_url!r}, model="m", max_concurrency=20), (0.0, 0.0))
            Slow().run(ws, [{{"item": str(i)}} for i in range(20)], endpoint=ep, progress=False)
        """)
        proc = subprocess.run([sys.executable, "-c", code], timeout=90)
        sent = len(server.requests)
    assert proc.returncode == -signal.SIGKILL and sent == 20
    again = Workspace.open(ws.root)
    assert again.store.scalar("SELECT count(*) FROM llm_calls") == 20
    assert again.runs("slow")[0]["status"] == "interrupted"
    again.close()


def test_a_long_report_list_is_bounded_in_the_stored_summary(ws):
    """stage_runs.summary keeps the first items of a long list (e.g. every unreadable image of an embed run) and
    how many more there were; the report the stage returns keeps them all."""
    from dataclasses import dataclass, field

    from workbench.core.runs import SUMMARY_LIST_MAX

    @dataclass
    class Report:
        problems: list = field(default_factory=list)
        examples: list = field(default_factory=list)

    class Many(Stage):
        name = "many"

        def execute(self, ws, run):
            bad = [(f"img{i}", "unreadable") for i in range(250)]
            run.add("problems", len(bad))
            return Report(problems=bad, examples=["a", "b"])

    rep = Many().run(ws)
    assert len(rep.problems) == 250
    stored = json.loads(ws.store.scalar("SELECT summary FROM stage_runs WHERE stage = 'many'"))
    assert stored["problems"][:SUMMARY_LIST_MAX] == [[f"img{i}", "unreadable"] for i in range(SUMMARY_LIST_MAX)]
    assert stored["problems"][SUMMARY_LIST_MAX:] == [f"... and {250 - SUMMARY_LIST_MAX} more"]
    assert stored["examples"] == ["a", "b"] and stored["counts"] == {"problems": 250}
