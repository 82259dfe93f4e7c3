"""Prompt workbench: template texts stored once by hash, per-call credit, version history and diffs, outcome
figures per version, and the playground (an edited prompt on a few rows, nothing applied) with saving."""

from __future__ import annotations

import pytest

from openai_server import OpenAIServer, Reply
from workbench.analysis import prompt_history as ph
from workbench.llm.prompts import PromptTemplate
from workbench.taxonomy.expand.stage import expand

pytestmark = pytest.mark.timeout(90)


def scripted(req):
    text = req.text
    if "first-level categories" in text:
        return Reply('["Underwater Scenes", "chart and table understanding"]')
    if "EDITED" in text:
        return Reply('["edited one", "edited two"]')
    parent = text.split("Category: ", 1)[1].splitlines()[0].split("~")[-1]
    return Reply(f'1. {parent} basics\n2. {parent} advanced\n3. {parent}\n')


@pytest.fixture
def server(monkeypatch):
    with OpenAIServer(scripted) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        yield srv


def test_texts_stored_once_by_hash_and_level2_credited_to_child_templates(seeded_ws, server):
    ws = seeded_ws
    expand(ws, level=1, progress=False)
    expand(ws, level=1, progress=False, again=True)          # the same template again: still one row
    l1 = PromptTemplate.load("expand_level1_supplement.j2", workspace_root=ws.root)
    assert ws.store.scalar("SELECT count(*) FROM prompt_texts WHERE hash=?", (l1.hash,)) == 1
    assert ph.text_of(ws, l1.hash) == l1.source

    rep = expand(ws, level=2, progress=False)
    run = ws.store.one("SELECT params FROM stage_runs WHERE id=?", (rep.run.run_id,))
    import json

    used = json.loads(run["params"])["prompts_used"]
    assert used and all("expand_child_" in f for f in used.values()), used
    calls = {r[0] for r in ws.store.query("SELECT DISTINCT prompt_file FROM llm_calls WHERE stage_run_id=?",
                                          (rep.run.run_id,))}
    assert calls and all("expand_child_" in f for f in calls)
    assert set(used) <= {r[0] for r in ws.store.query("SELECT hash FROM prompt_texts")}
    # The history lists child templates under their own names, and not under level 1's.
    assert l1.hash not in set(ph.history(ws, "expand_child_expand.j2")["hash"])


def test_history_diff_and_outcomes_per_version(seeded_ws, server):
    ws = seeded_ws
    expand(ws, level=1, progress=False)
    v1 = PromptTemplate.load("expand_level1_supplement.j2", workspace_root=ws.root)
    edited = v1.source.replace("first-level categories", "first-level categories (be brief)", 1)
    assert edited != v1.source
    ph.save_copy(ws, "expand_level1_supplement.j2", edited)
    assert (ws.prompts_dir / "expand_level1_supplement.j2").read_text() == edited
    rep = expand(ws, level=1, progress=False, apply=False)
    v2 = PromptTemplate.from_text(edited)
    hist = ph.history(ws, "expand_level1_supplement.j2")
    assert list(hist["hash"]) == [v1.hash, v2.hash] and list(hist["version"]) == [1, 2]
    d = ph.diff(ws, v1.hash, v2.hash)
    assert "+" in d and "(be brief)" in d and d.count("\n+") >= 1
    assert "brief" in ph.diff(ws, v1.hash, v2.hash, html=True)
    o1, o2 = ph.outcomes(ws, v1.hash), ph.outcomes(ws, v2.hash)
    assert o1["added"] == 1 and o1["existing"] == 1 and o1["calls"] == 1
    assert o2["replies"] == 1 and rep.run.run_id
    side = ph.compare(ws, [v1.hash, v2.hash])
    assert list(side.columns) == [v1.hash, v2.hash] and "dropped" in side.index


def test_playground_runs_edited_prompt_on_five_rows_without_changing_taxonomy(seeded_ws, server):
    ws = seeded_ws
    expand(ws, level=2, progress=False)                 # the current version's replies, in the cache
    nodes_before = ws.store.scalar("SELECT count(*) FROM nodes")
    which = "child_expand"
    current = ph.stage_prompts(ws, "expand")[which]
    rows = ph.candidate_rows(ws, "expand", which)
    assert rows and all(r.template == which for r in rows)
    picked = ph.pick_rows(rows, 5, seed=1)
    assert len(picked) == 5
    est = ph.estimate(ws, "expand", which, "EDITED " + current.source, picked)
    assert est.dry_run and est.to_call == 5 and est.est_prompt_tokens > 0
    calls = len(server.requests)
    out = ph.try_prompt(ws, "expand", which, "EDITED " + current.source, picked)
    assert len(server.requests) == calls + 5
    assert len(out) == 5 and out["edited_parsed"].str.contains("edited one").all()
    assert out["current"].str.contains("basics").all()     # the current version's reply beside it
    assert ws.store.scalar("SELECT count(*) FROM nodes") == nodes_before
    # Again: served from the cache, nothing called.
    ph.try_prompt(ws, "expand", which, "EDITED " + current.source, picked)
    assert len(server.requests) == calls + 5


def test_page_playground_runs_edited_prompt_on_five_rows_and_saves(seeded_ws, server):
    import os
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    ws = seeded_ws
    expand(ws, level=2, progress=False)
    v1 = PromptTemplate.load("expand_child_expand.j2", workspace_root=ws.root)
    nodes_before = ws.store.scalar("SELECT count(*) FROM nodes")
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.query_params["page"] = "prompts"
    os.environ["WORKBENCH_WORKSPACE"] = str(ws.root)
    at.session_state["pg_open"] = True
    at.session_state["pg_stage"] = "expand"
    at.session_state["pg_which"] = "child_expand"
    at.session_state["pg_n"] = 5
    at.session_state["pg_text_expand_child_expand"] = "EDITED " + v1.source
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Estimate: dry run" in c.value and "5 row(s)" in c.value for c in at.caption)
    calls = len(server.requests)
    at.button(key="pg_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(server.requests) - calls <= 5
    codes = [c.value for c in at.code]
    assert sum("edited one" in c for c in codes) == 5
    assert sum("basics" in c for c in codes) >= 1          # the current version's output beside it
    assert ws.store.scalar("SELECT count(*) FROM nodes") == nodes_before
    at.button(key="pg_save").click().run()
    assert (ws.prompts_dir / "expand_child_expand.j2").read_text() == "EDITED " + v1.source
    # The history section lists the stored texts and diffs two versions.
    import streamlit

    streamlit.cache_data.clear()      # table versions are cached for a few seconds (dashboard/data.py)
    at.session_state["pg_open"] = False
    at.session_state["pr_hist_name"] = "expand_child_expand.j2"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(c.language == "diff" and "+EDITED" in c.value for c in at.code), [(c.language, c.value[:80]) for c in at.code]
