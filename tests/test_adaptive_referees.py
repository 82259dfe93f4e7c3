"""Adaptive k-of-N referees: ask in order, stop once decided; selection equals full voting's on the same votes."""

from __future__ import annotations

import hashlib
import re

import pytest
from PIL import Image

from conftest import run_cli
from openai_server import OpenAIServer
from workbench.analysis import agreement
from workbench.analysis.funnel import SAVED, funnel
from workbench.core.workspace import Workspace
from workbench.stages.referee.stage import decided, expected_calls, is_audit, run_referees
from workbench.stages.select.stage import select
from workbench.taxonomy.model import Taxonomy

pytestmark = pytest.mark.timeout(120)

N_SAMPLES = 60
PASS_RATES = {"judge-a": 0.7, "judge-b": 0.5, "judge-c": 0.6}


def vote_reply(model: str, question: str) -> str:
    """A referee's fixed vote on a sample: passes with its pass rate (by a hash), now and then ambiguous."""
    h = int(hashlib.sha256(f"{model}|{question}".encode()).hexdigest()[:8], 16) / 16 ** 8
    if model == "judge-b" and int(question.split()[1]) % 17 == 5:
        return "maybe"                       # an invalid vote: NULL, counted as not positive
    return "1" if h < PASS_RATES[model] else "0"


def script(req):
    q = re.search(r"(Sample \d+ asks what\?)", req.text).group(1)
    return vote_reply(req.model, q)


def make_workspace(root, base_url, *, audit_fraction=0.2, min_votes=2):
    ws = Workspace.init(root)
    node = Taxonomy.of(ws).add_path("counting~people counting").id
    img_dir = root / "imgs"
    img_dir.mkdir()
    Image.new("RGB", (20, 20), (9, 9, 9)).save(img_dir / "a.png")
    with ws.store.write() as c:
        c.execute("INSERT INTO images(id, path, root, source, width, height, format, added_at) "
                  "VALUES ('img', 'a.png', ?, 'test', 20, 20, 'PNG', 'now')", (str(img_dir),))
        for i in range(N_SAMPLES):
            c.execute("INSERT INTO samples(id, image_id, node_id, question, answer, status, created_at) "
                      "VALUES (?, 'img', ?, ?, 'yes', 'ok', 'now')",
                      (f"s{i:03d}", node, f"Sample {i} asks what?"))
    (ws.root / "workbench.toml").write_text((ws.root / "workbench.toml").read_text().replace(
        "[select]\nmin_votes = 2", f"[select]\nmin_votes = {min_votes}") + "".join(f"""
[endpoints.{m}]
base_url = "{base_url}"
model = "judge-{m}"
max_retries = 0
""" for m in "abc") + "".join(f"""
[[referees]]
name = "{m}"
endpoint = "{m}"
""" for m in "abc") + f"""
[referee]
audit_fraction = {audit_fraction}
""")
    return Workspace.open(ws.root)


def selections(ws):
    return {r[0]: (r[1], r[2]) for r in ws.store.query("SELECT sample_id, selected, reason FROM selections")}


def votes_by_sample(ws):
    out: dict[str, dict[str, int | None]] = {}
    for r in ws.store.query("SELECT sample_id, referee, vote FROM votes"):
        out.setdefault(r[0], {})[r[1]] = r[2]
    return out


def test_decided():
    # 2 of 3: two yes or two no settle it; one each leaves it open.
    assert decided(2, 2, 3, 2) and decided(0, 2, 3, 2) and not decided(1, 2, 3, 2)
    assert not decided(1, 1, 3, 2) and decided(0, 3, 3, 2) and not decided(0, 1, 3, 2)
    assert decided(0, 0, 3, 0) and decided(0, 0, 3, 4)   # k = 0 always passes, k > N never can


def test_expected_calls():
    assert expected_calls([0.5, 0.5, 0.5], 2) == pytest.approx(2.5)     # the third only on a 1-1 split
    assert expected_calls([1.0, 1.0, 1.0], 2) == pytest.approx(2.0)
    assert expected_calls([0.3, 0.9], 1) == pytest.approx(1.7)          # 1 of 2: stop at the first yes
    assert expected_calls([0.5] * 3, 0) == 0 and expected_calls([0.5] * 3, 3) == pytest.approx(1.75)


def test_audit_set_is_a_fixed_fraction_of_sample_ids():
    ids = [f"sample-{i}" for i in range(20000)]
    share = sum(is_audit(s, 0.05) for s in ids) / len(ids)
    assert 0.04 < share < 0.06
    assert [is_audit(s, 0.05) for s in ids[:200]] == [is_audit(s, 0.05) for s in ids[:200]]
    assert not any(is_audit(s, 0.0) for s in ids[:500]) and all(is_audit(s, 1.0) for s in ids[:500])


@pytest.mark.parametrize("min_votes", [2, 1, 3])
def test_adaptive_selection_equals_full_voting_and_saves_calls(tmp_path, min_votes):
    with OpenAIServer(script, models=("judge-a", "judge-b", "judge-c")) as server:
        full = make_workspace(tmp_path / "full", server.base_url, min_votes=min_votes)
        reps = run_referees(full, adaptive=False, progress=False)
        full_calls = len(server.requests)
        assert full_calls == 3 * N_SAMPLES and [r.called for r in reps] == [N_SAMPLES] * 3

        ada = make_workspace(tmp_path / "ada", server.base_url, min_votes=min_votes)
        plans = {}
        reps = run_referees(ada, adaptive=True, progress=False, on_plan=lambda n, p: plans.setdefault(n, p))
        ada_calls = len(server.requests) - full_calls   # different workspace: nothing cached across them
        assert ada_calls == sum(r.called for r in reps) < full_calls

        # The same votes where both asked; the adaptive run asked a referee exactly when still undecided.
        fv, av = votes_by_sample(full), votes_by_sample(ada)
        order = ["a", "b", "c"]
        for sid, votes in av.items():
            assert all(fv[sid][r] == v for r, v in votes.items())
            for i, r in enumerate(order):
                before = [fv[sid][x] for x in order[:i]]
                open_ = not decided(sum(v == 1 for v in before), len(before), 3, min_votes)
                assert (r in votes) == (open_ or is_audit(sid, 0.2)), (sid, r, votes)
        audit = [s for s in fv if is_audit(s, 0.2)]
        assert audit and all(len(av[s]) == 3 for s in audit)
        if min_votes == 2:   # the third referee only where the first two disagree (or audit)
            third = {s for s, v in av.items() if "c" in v}
            assert third == {s for s in fv if fv[s]["a"] != fv[s]["b"] and (fv[s]["a"] == 1 or fv[s]["b"] == 1)
                             } | set(audit)
        assert plans["c"].decided == N_SAMPLES - plans["c"].asked

        # Selection on adaptive votes = selection on full votes.
        select(full)
        select(ada)
        assert selections(ada) == selections(full)
        assert sum(x[0] for x in selections(full).values()) > 0 or min_votes == 3

        # Re-running adaptively calls nothing: every referee's decided rows stay decided, asked ones are cached.
        n = len(server.requests)
        run_referees(ada, adaptive=True, progress=False)
        assert len(server.requests) == n

        # The funnel says what was saved; a fully voted workspace shows no such row.
        f = funnel(ada)
        assert f["stage"].tolist()[-1] == SAVED and f["count"].tolist()[-1] == full_calls - ada_calls
        assert SAVED not in funnel(full)["stage"].tolist()
        assert funnel(ada, per_task=True)[SAVED].sum() == full_calls - ada_calls

        # Agreement: on fully voted samples only (the audit set once any run was adaptive).
        pats, names = agreement.load_patterns(ada.store, fully_voted=True, audit_fraction=0.2)
        assert names == order and int(pats["n"].sum()) == len(audit)
        pats_full, _ = agreement.load_patterns(full.store, fully_voted=True, audit_fraction=0.2)
        assert int(pats_full["n"].sum()) == N_SAMPLES


def test_cli_adaptive_by_default_full_on_request(tmp_path):
    with OpenAIServer(script, models=("judge-a", "judge-b", "judge-c")) as server:
        ws = make_workspace(tmp_path / "ws", server.base_url, audit_fraction=0.0)
        r = run_cli("referee", ws.root)
        assert r.code == 0, r.err
        assert "referee c: asked about" in r.out and "already decided" in r.out
        adaptive_calls = len(server.requests)
        assert adaptive_calls < 3 * N_SAMPLES
        r = run_cli("referee", ws.root, "--full")
        assert r.code == 0, r.err
        # --full asks only what adaptive voting skipped (the rest is cached).
        assert len(server.requests) == 3 * N_SAMPLES
        assert ws.store.scalar("SELECT count(*) FROM votes") == 3 * N_SAMPLES


@pytest.mark.timeout(180)
def test_referees_page_measures_agreement_on_the_audit_set(tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from conftest import REPO

    with OpenAIServer(script, models=("judge-a", "judge-b", "judge-c")) as server:
        ws = make_workspace(tmp_path / "ws", server.base_url)
        run_referees(ws, adaptive=True, progress=False)
    audit = sum(is_audit(f"s{i:03d}", 0.2) for i in range(N_SAMPLES))
    monkeypatch.setenv("WORKBENCH_WORKSPACE", str(ws.root))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.query_params["page"] = "referees"
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    m = {x.label: x.value for x in at.metric}
    assert m["samples voted"] == str(N_SAMPLES) and m["fully voted samples"] == str(audit)
    pats, names = agreement.load_patterns(ws.store, fully_voted=True, audit_fraction=0.2)
    assert m["Fleiss' κ"] == f"{agreement.fleiss_from_patterns(pats, names):.3f}"
    assert any(f"the {audit} fully voted samples" in c.value and "audit set" in c.value for c in at.caption)
