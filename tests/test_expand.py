"""Expansion: the tolerant parser, proposals with provenance, resume rules, prompt A/B, the CLI."""

from __future__ import annotations

import pytest

from conftest import run_cli, run_cli_subprocess
from openai_server import OpenAIServer, Reply
from workbench.core.config import EndpointConfig
from workbench.core.errors import ParseFailure
from workbench.stages.expand.stage import ExpandRow, compare_prompts, expand, parse_reply, plan, preview, proposals
from workbench.taxonomy.model import Taxonomy

pytestmark = pytest.mark.timeout(90)


def child_row(existing=(), rejected=()):
    taken = {n.casefold(): "accepted" for n in existing} | {n.casefold(): "rejected" for n in rejected}
    return ExpandRow("tparent", "Counting", "Object Recognition~Counting", 3, list(existing), taken,
                     "child_supplement" if existing else "child_expand")


def outcome(parsed, line_part):
    return next(p for p in parsed.proposals if line_part in p.line)


def test_parser_json_in_fences_with_duplicates_and_parent():
    raw = '```json\n["Count people", "count  PEOPLE", "Counting", "Count cars", 3, "Count trees"]\n```'
    parsed = parse_reply(raw, child_row(existing=["Count trees"]))
    assert parsed.used_json and parsed.names == ["Count people", "Count cars"]
    assert outcome(parsed, "count  PEOPLE").reason == "repeated in this reply"
    assert outcome(parsed, "Counting").reason == "repeats the parent's name"
    assert outcome(parsed, "3").reason == "JSON item is not a string"
    assert outcome(parsed, "Count trees").outcome == "existing"


def test_parser_line_fallback_numbering_bullets_quotes_and_lookalike_paths():
    raw = ("Sure! Here are new subcategories:\n"
           "1. Crowd counting\n"
           "2) \"Vehicle counting\",\n"
           "- **Cell counting**\n"
           "* Object Recognition∼Counting∼Dense counting\n"   # full path with U+223C
           "• Object Recognition～Counting～Sparse counting\n"  # full path with U+FF5E
           "Other~Branch~Wrong place\n"
           "a/b testing\n"
           "Crowd counting\n"
           "Counting~Deep~Too deep\n"
           "I hope these help you build a complete and well balanced taxonomy of all the tasks.\n")
    parsed = parse_reply(raw, child_row(rejected=["Cell counting"]))
    assert not parsed.used_json
    assert parsed.names == ["Crowd counting", "Vehicle counting", "Dense counting", "Sparse counting"]
    assert outcome(parsed, "Here are").reason == "prose, not a task name"
    assert outcome(parsed, "Cell counting").reason == "already a child (rejected before)"
    assert "not one level below" in outcome(parsed, "Wrong place").reason
    assert "'/'" in outcome(parsed, "a/b").reason
    assert outcome(parsed, "Too deep").outcome == "dropped"
    assert outcome(parsed, "I hope").reason == "prose, not a task name"
    # Every line of the reply is accounted for.
    assert len(parsed.proposals) == 11


def test_parser_errors_and_first_level_paths():
    with pytest.raises(ParseFailure, match="empty reply"):
        parse_reply("", child_row())
    with pytest.raises(ParseFailure, match="no task names"):
        parse_reply("Here you go:\n```\n```", child_row())
    top = ExpandRow(None, None, None, 1, ["Chart Understanding"], {"chart understanding": "accepted"},
                    "level1_supplement")
    parsed = parse_reply('{"categories": ["Remote Sensing", "A~B", "chart understanding"]}', top)
    assert parsed.names == ["Remote Sensing"]
    assert "first-level name" in outcome(parsed, "A~B").reason


def scripted(req):
    """Level 1: two new names (one a repeat); children: names derived from the parent in the prompt."""
    text = req.text
    if "first-level categories" in text:
        return Reply('["Underwater Scenes", "chart and table understanding", "underwater  scenes"]')
    parent = text.split("Category: ", 1)[1].splitlines()[0].split("~")[-1]
    return Reply(f'1. {parent} basics\n2. {parent} advanced\n3. {parent}\n')


@pytest.fixture
def server(monkeypatch):
    with OpenAIServer(scripted) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        yield srv


def test_expand_levels_with_provenance_and_skip_on_rerun(seeded_ws, server):
    ws = seeded_ws
    rep = expand(ws, level=1, progress=False)
    assert rep.added == 1 and rep.existing == 1 and rep.dropped == 1
    node = Taxonomy.of(ws).find("Underwater Scenes")
    assert node.status == "proposed" and node.origin == "generated" and node.level == 1
    assert node.prompt_file == "prompts/expand_level1_supplement.j2" and len(node.prompt_hash) == 16
    assert node.model == "gpt-4o-2024-05-13" and node.stage_run_id == rep.run.run_id
    run = ws.runs("expand")[0]
    assert run["status"] == "done" and run["prompt_hash"] == node.prompt_hash

    level1 = [n for n in Taxonomy.of(ws).nodes(("accepted",)) if n.level == 1]
    rep = expand(ws, level=2, progress=False)
    assert rep.parents == len(level1) and rep.run.called == len(level1)
    assert rep.added == 2 * len(level1) and rep.dropped == len(level1)  # "X" repeats the parent
    calls = len(server.requests)
    # The proposed first-level node is not expanded (only accepted parents are).
    assert Taxonomy.of(ws).children(node.id) == []
    rep = expand(ws, level=2, progress=False)
    assert rep.skipped == len(level1) and len(server.requests) == calls
    # Templates: a parent with children gets the supplement prompt listing them.
    kinds = {r["template"] for r in ws.store.query("SELECT template FROM expand_results")}
    assert kinds >= {"level1_supplement", "child_supplement", "child_expand"}
    # Accept, then expand level 3 under one chosen node.
    Taxonomy.of(ws).accept([node.id])
    rep = expand(ws, nodes=[node.id], progress=False)
    names = [c.name for c in Taxonomy.of(ws).children(node.id)]
    assert names == ["Underwater Scenes basics", "Underwater Scenes advanced"]
    df = proposals(ws, parent_id=node.id)
    assert list(df.outcome) == ["added", "added", "dropped"] and df.reason.iloc[2] == "repeats the parent's name"


def test_preview_custom_prompt_and_ab_comparison(seeded_ws, server):
    ws = seeded_ws
    parent = Taxonomy.of(ws).nodes(("accepted",))[0]
    msgs = preview(ws, parent.id)
    assert msgs[0]["role"] == "system" and Taxonomy.of(ws).path(parent.id) in msgs[-1]["content"]
    (ws.prompts_dir / "terse.j2").write_text("Category: {{ parent_path }}\nList subtasks as JSON.\n")
    (ws.prompts_dir / "wordy.j2").write_text("Category: {{ parent_path }}\nList many subtasks, please.\n")
    table = compare_prompts(ws, "prompts/terse.j2", "prompts/wordy.j2", nodes=[parent.id])
    assert len(table) == 1 and table.attrs["hash_a"] != table.attrs["hash_b"]
    assert table.both.iloc[0] == [f"{parent.name} basics", f"{parent.name} advanced"]
    # Recorded only: no nodes were added, both prompts' proposals are kept.
    assert Taxonomy.of(ws).count() == Taxonomy.of(ws).count(("accepted",))
    df = proposals(ws, parent_id=parent.id)
    assert set(df.prompt_hash) == {table.attrs["hash_a"], table.attrs["hash_b"]} and set(df.outcome) == {"new",
                                                                                                         "dropped"}
    assert {r["prompt_hash"] for r in ws.store.query("SELECT prompt_hash FROM llm_calls")} == set(df.prompt_hash)
    with pytest.raises(Exception, match="not found"):
        expand(ws, nodes=[parent.id], prompt="prompts/missing.j2")


def test_plan_rules(seeded_ws):
    with pytest.raises(Exception, match="either a level"):
        plan(seeded_ws)
    with pytest.raises(Exception, match="no accepted nodes at level 5"):
        plan(seeded_ws, level=6)


def test_cli_expand_dry_run_budget_and_errors(seeded_ws, server, tmp_path):
    ws = seeded_ws
    res = run_cli("expand", ws.root, "--level", "2", "--dry-run")
    assert res.code == 0, res.err
    assert "call(s) to make" in res.out and "$" in res.out and len(server.requests) == 0
    res = run_cli("expand", ws.root, "--level", "2", "--budget", "0", "--no-progress")
    assert res.code == 0 and len(server.requests) == 35   # a local server is free: a $0 budget does not stop it
    with open(ws.root / "workbench.toml", "a") as f:      # a priced model: the budget stops before any call
        f.write('\n[prices]\n"gpt-4o-2024-05-13" = [5.0, 15.0]\n')
    res = run_cli("expand", ws.root, "--level", "2", "--budget", "0", "--no-progress", "--again")
    assert res.code == 1 and "stopped early: budget" in res.err and len(server.requests) == 35
    res = run_cli("expand", ws.root, "--node", "no such node")
    assert res.code == 2 and res.err.startswith("error: ") and "no node" in res.err
    res = run_cli("expand", ws.root)
    assert res.code == 2 and "--level" in res.err
    res = run_cli("expand", ws.root, "--level", "1", "--endpoint", "nowhere")
    assert res.code == 2 and "[endpoints.nowhere]" in res.err
    res = run_cli_subprocess("expand", ws.root, "--level", "1", "--no-progress",
                             env={"OPENAI_BASE_URL": server.base_url})
    assert res.code == 0, res.err
    assert "1 new proposed node(s)" in res.out
    for cmd in (["expand"], ["taxonomy", "duplicates"], ["taxonomy", "coverage"]):
        h = run_cli(*cmd, "--help")
        assert h.code == 0 and "Usage" in h.out


def test_failed_calls_are_retried_on_the_next_run(seeded_ws):
    ws = seeded_ws
    state = {"fail": True}

    def script(req):
        if state["fail"]:
            return Reply(status=503)
        return scripted(req)

    with OpenAIServer(script) as srv:
        ws.config.endpoints["default"] = EndpointConfig(base_url=srv.base_url, max_retries=0)
        rep = expand(ws, level=2, progress=False)
        assert rep.run.stopped and rep.added == 0
        state["fail"] = False
        rep = expand(ws, level=2, progress=False)
        assert rep.added > 0 and not rep.run.stopped
        assert ws.store.scalar("SELECT count(*) FROM llm_calls WHERE status='error'") == 0
