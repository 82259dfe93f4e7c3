"""Prompt workbench: template texts stored once by hash, per-call credit, version history and diffs, outcome
figures per version, the playground library (an edited prompt on a few rows, nothing applied) and the Prompts
page's new trial (run, shown as a matrix, promoted)."""

from __future__ import annotations

import pytest

from conftest import plain
from openai_server import OpenAIServer, Reply
from workbench.analysis import prompt_history as ph
from workbench.analysis.trials import Trial
from workbench.llm import prompt_store
from workbench.llm.prompts import PromptTemplate
from workbench.stages.expand.stage import expand

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
    assert prompt_store.text_of(ws, l1.hash) == l1.source

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
    ws.prompts_dir.mkdir(parents=True, exist_ok=True)
    (ws.prompts_dir / "expand_level1_supplement.j2").write_text(edited)   # the workspace copy wins
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


def test_page_new_trial_runs_an_edited_version_on_five_parents_and_promotes_it(seeded_ws, server):
    import os
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    ws = seeded_ws
    expand(ws, level=2, progress=False)
    v1 = PromptTemplate.load("expand_child_supplement.j2", workspace_root=ws.root)
    nodes_before = ws.store.scalar("SELECT count(*) FROM nodes")
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.query_params["page"] = "prompts"
    os.environ["WORKBENCH_WORKSPACE"] = str(ws.root)
    at.session_state["tr_new"] = True
    at.session_state["tr_stage"] = "expand:child_supplement"
    at.session_state["tr_rows_expand:child_supplement"] = 5
    at.session_state["tr_text_expand:child_supplement"] = "EDITED " + v1.source
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    captions = [plain(c.value) for c in at.caption]
    assert any("Estimate: " in c and "5 row(s)" in c for c in captions), captions
    calls = len(server.requests)
    at.button(key="tr_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    # 5 edited + 5 current: each parent's prompt lists the children level 2 gave it, so it is a new request.
    assert len(server.requests) - calls == 10
    assert any("Trial 1 stored: done" in plain(m.value) for m in at.success)
    texts = [t.value for t in at.text]
    assert sum("• edited one" in t for t in texts) == 5           # names as a list, one cell per parent
    assert sum("basics" in t for t in texts) == 5                 # the current version's column beside it
    assert ws.store.scalar("SELECT count(*) FROM nodes") == nodes_before
    at.selectbox(key="tr_prom_1").set_value(next(h for h, n in Trial.load(ws, 1).columns.items() if n == "edited"))
    at.button(key="tr_promote_1").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert (ws.prompts_dir / "expand_child_supplement.j2").read_text() == "EDITED " + v1.source
    assert any("promoted edited" in plain(m.value) and "parents with children" in plain(m.value) for m in at.success)


def test_outcome_figures_for_filter_qa_and_referee_versions(seeded_ws):
    """Keep rate (filter), parse failures and empty answers (Q&A), pass rate and κ (referees), per version,
    read through each row's call (llm_calls.prompt_hash)."""
    ws = seeded_ws
    now = "2026-01-01T00:00:00"
    with ws.store.write() as c:
        for i in range(4):
            c.execute("INSERT INTO images(id, path, root, source, width, height, format, added_at) "
                      "VALUES (?, ?, '/x', 'test', 8, 8, 'PNG', ?)", (f"img{i}", f"{i}.png", now))

        def call(key, stage, h):
            c.execute("INSERT INTO llm_calls(key, stage, endpoint, model, prompt_hash, request, status, raw_text,"
                      " created_at) VALUES (?, ?, 'e', 'm', ?, '{}', 'ok', 'r', ?)", (key, stage, h, now))

        # filter: version F1 keeps 1 of 4 labels, F2 keeps 3 of 4
        for h, kept in (("F1", [1, 0, 0, 0]), ("F2", [1, 1, 1, 0])):
            for i, k in enumerate(kept):
                call(f"{h}{i}", "filter", h)
                c.execute("INSERT INTO filter_decisions(image_id, label, kept, call_key) VALUES (?, ?, ?, ?)",
                          (f"img{i}", f"label {h}", k, f"{h}{i}"))
        # qa: version Q1 has a parse failure and an empty answer among 4 rows
        for i, (status, reason, answer) in enumerate([("ok", None, "yes"), ("ok", None, ""),
                                                     ("rejected", "parse error: no JSON", None),
                                                     ("ok", None, "two")]):
            call(f"Q1{i}", "qa", "Q1")
            c.execute("INSERT INTO samples(id, image_id, label, question, answer, status, reason, call_key,"
                      " created_at) VALUES (?, ?, 'l', 'q', ?, ?, ?, ?, ?)",
                      (f"s{i}", f"img{i}", answer, status, reason, f"Q1{i}", now))
        # referees: R1 (referee a) agrees with referee b on every sample; pass rate 2/4
        for i, (va, vb) in enumerate([(1, 1), (0, 0), (1, 1), (0, 0)]):
            call(f"R1{i}", "referee:a", "R1")
            c.execute("INSERT INTO votes(sample_id, referee, vote, valid, prompt_hash, call_key) "
                      "VALUES (?, 'a', ?, 1, 'R1', ?)", (f"s{i}", va, f"R1{i}"))
            c.execute("INSERT INTO votes(sample_id, referee, vote, valid, prompt_hash) VALUES (?, 'b', ?, 1, 'R2')",
                      (f"s{i}", vb))
    f1, f2 = ph.outcomes(ws, "F1"), ph.outcomes(ws, "F2")
    assert (f1["decisions"], f1["keep_rate"], f2["keep_rate"]) == (4, 0.25, 0.75)
    q = ph.outcomes(ws, "Q1")
    assert (q["qa_rows"], q["parse_failures"], q["empty_answers"]) == (4, 1, 1)
    r = ph.outcomes(ws, "R1")
    assert r["votes"] == 4 and r["pass_rate"] == 0.5 and r["kappa_vs_others"] == pytest.approx(1.0)
    side = ph.compare(ws, ["F1", "F2"])
    assert side.loc["keep_rate", "F1"] == 0.25 and side.loc["keep_rate", "F2"] == 0.75
