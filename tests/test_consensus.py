"""Human adjudication and Dawid–Skene consensus: recovery of simulated referees' reliabilities, selection on the
posterior, flags that keep a sample out of selection and export, human votes as `human:<name>`, the uncertainty
queue, the CLI and the dashboard page."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.conftest import run_cli

from conftest import plain
from workbench.core.errors import WorkbenchError
from workbench.review import adjudication as adj
from workbench.stages.export.stage import export
from workbench.stages.select import consensus as C
from workbench.stages.select.stage import select
from workbench.taxonomy.model import Taxonomy

pytest.importorskip("crowdkit")
pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parent.parent

# (sensitivity, specificity) per referee and first-level category "A" / "B": c is much worse on B.
REFEREES = {"a": {"A": (0.95, 0.80), "B": (0.95, 0.80)},
            "b": {"A": (0.85, 0.90), "B": (0.85, 0.90)},
            "c": {"A": (0.90, 0.85), "B": (0.65, 0.55)},
            "d": {"A": (0.75, 0.95), "B": (0.75, 0.95)}}


def two_categories(ws) -> dict[str, list[str]]:
    """Leaves of two different first-level categories of the seed taxonomy."""
    by_cat: dict[str, list[str]] = {}
    for node, path in Taxonomy.of(ws).leaves():
        by_cat.setdefault(path.split("~")[0], []).append(node.id)
    cats = sorted(by_cat, key=lambda k: -len(by_cat[k]))[:2]
    return {"A": by_cat[cats[0]], "B": by_cat[cats[1]]}


def simulate(ws, n: int, referees=REFEREES, prior: float = 0.7, seed: int = 0, images=None):
    """n ok samples (half in each category) with seeded truth and votes; returns (truth, votes frame)."""
    rng = np.random.default_rng(seed)
    leaves = two_categories(ws)
    root = ws.root / "imgs"
    truth = (rng.random(n) < prior).astype(int)
    cat = np.where(np.arange(n) < n // 2, "A", "B")
    ids = [f"s{i:05d}" for i in range(n)]
    rows = []
    for r, per_cat in referees.items():
        u = rng.random(n)
        sens = np.array([per_cat[c][0] for c in cat])
        spec = np.array([per_cat[c][1] for c in cat])
        v = np.where(truth == 1, u < sens, u >= spec).astype(int)
        rows += list(zip(ids, [r] * n, v.tolist()))
    n_img = images or 20
    with ws.store.write() as c:
        for i in range(n_img):
            c.execute("INSERT INTO images(id, path, root, source, width, height, format, added_at) VALUES "
                      "(?, ?, ?, 'test', 8, 8, 'PNG', 'now')", (f"img{i}", f"img{i}.png", str(root)))
        c.executemany("INSERT INTO samples(id, image_id, node_id, question, answer, status, created_at) "
                      "VALUES (?, ?, ?, ?, ?, 'ok', 'now')",
                      [(sid, f"img{i % n_img}", leaves[cat[i]][i % len(leaves[cat[i]])], f"question {i}?",
                        f"answer {i}") for i, sid in enumerate(ids)])
        c.executemany("INSERT INTO votes(sample_id, referee, vote, valid, raw_text) VALUES (?, ?, ?, 1, ?)",
                      [(s, r, v, str(v)) for s, r, v in rows])
    votes = pd.DataFrame(rows, columns=["sample_id", "referee", "vote"])
    return pd.Series(truth, index=ids), votes, pd.Series(cat, index=ids)


def empirical(truth, votes, cat=None, which=None):
    """Each referee's real sensitivity, specificity and accuracy against the simulated truth."""
    df = votes.assign(t=votes["sample_id"].map(truth))
    if which is not None:
        df = df[df["sample_id"].map(cat) == which]
    out = {}
    for r, g in df.groupby("referee"):
        out[r] = ((g.vote[g.t == 1] == 1).mean(), (g.vote[g.t == 0] == 0).mean(), (g.vote == g.t).mean())
    return out


def test_dawid_skene_recovers_simulated_referees(seeded_ws):
    ws = seeded_ws
    truth, votes, cat = simulate(ws, 5000)
    cons = C.consensus(ws, include_human=False)
    rel = cons.reliability.set_index("referee")
    real = empirical(truth, votes)
    assert list(rel.index) == ["a", "b", "c", "d"]
    for r, (sens, spec, acc) in real.items():
        assert rel.loc[r, "sensitivity"] == pytest.approx(sens, abs=0.05), r
        assert rel.loc[r, "specificity"] == pytest.approx(spec, abs=0.05), r
        assert rel.loc[r, "accuracy"] == pytest.approx(acc, abs=0.05), r
        assert rel.loc[r, "votes"] == 5000
    assert cons.prior == pytest.approx(truth.mean(), abs=0.03)
    # The posterior beats every single referee and the majority of four.
    post = cons.posterior.reindex(truth.index)
    ds_acc = ((post > 0.5).astype(int) == truth).mean()
    assert ds_acc > max(a for _, _, a in real.values())
    majority = (votes.groupby("sample_id")["vote"].mean().reindex(truth.index) > 0.5).astype(int)
    assert ds_acc > (majority == truth).mean()
    # Per first-level category: referee c is good on A and poor on B, as simulated.
    per = cons.by_category(C.first_level(ws)).set_index(["referee", "category"])
    names = {k: Taxonomy.of(ws).index(None).paths[v[0]].split("~")[0] for k, v in two_categories(ws).items()}
    for which in ("A", "B"):
        for r, (sens, _spec, acc) in empirical(truth, votes, cat, which).items():
            got = per.loc[(r, names[which])]
            assert got["accuracy"] == pytest.approx(acc, abs=0.05), (r, which)
            assert got["sensitivity"] == pytest.approx(sens, abs=0.05), (r, which)
            assert got["votes"] == 2500
    assert per.loc[("c", names["A"]), "accuracy"] - per.loc[("c", names["B"]), "accuracy"] > 0.2


def test_consensus_is_stored_by_vote_content_and_reused(seeded_ws, monkeypatch):
    ws = seeded_ws
    simulate(ws, 300)
    first = C.consensus(ws)
    files = list((ws.arrays_dir / "consensus").glob("*.npz"))
    assert len(files) == 1 and first.key in files[0].name

    def boom(*a, **k):
        raise AssertionError("refitted although the votes did not change")

    monkeypatch.setattr(C, "fit", boom)
    again = C.consensus(ws)
    assert again.key == first.key
    pd.testing.assert_series_equal(again.posterior.sort_index(), first.posterior.sort_index(), check_names=False)
    pd.testing.assert_frame_equal(again.reliability, first.reliability, check_dtype=False)
    # Changing one vote in place (same row, same count) changes the key: no stale reuse.
    ws.store.conn.execute("UPDATE votes SET vote = 1 - vote WHERE sample_id = 's00007' AND referee = 'b'")
    ws.store.conn.commit()
    assert C.consensus_key(ws.store) != first.key
    assert C.consensus(ws, compute_missing=False) is None
    stale = C.consensus(ws, compute_missing=False, allow_stale=True)
    assert stale.stale and stale.key == first.key


def test_select_ds_keeps_what_the_posterior_says(seeded_ws, tmp_path):
    ws = seeded_ws
    simulate(ws, 400, seed=3)
    # Default k-of-N is unchanged: at least 2 positive votes.
    rep = select(ws)
    yes = pd.DataFrame(ws.store.query("SELECT sample_id, sum(vote) FROM votes GROUP BY sample_id")).set_index(0)[1]
    sel = {r[0] for r in ws.store.query("SELECT sample_id FROM selections WHERE selected = 1")}
    assert sel == set(yes[yes >= 2].index) and rep.passed_votes == len(sel)

    r = run_cli("select", ws.root, "--consensus", "ds", "--min-posterior", "0.8")
    assert r.code == 0, r.err
    cons = C.consensus(ws)
    want = set(cons.posterior[cons.posterior >= 0.8].index)
    sel = {r[0] for r in ws.store.query("SELECT sample_id FROM selections WHERE selected = 1")}
    assert sel == want and 0 < len(want) < 400
    reasons = dict(ws.store.query("SELECT sample_id, reason FROM selections WHERE selected = 0"))
    assert set(reasons.values()) == {"posterior P(good) below 0.8"}
    run = ws.store.one("SELECT params FROM stage_runs WHERE stage = 'select' ORDER BY id DESC LIMIT 1")
    params = json.loads(run[0])
    assert params["consensus"] == "ds" and params["consensus_key"] == cons.key
    # The dashboard's funnel counts what passed this selection's rule, and gives the k-of-N figure beside it.
    from workbench.apps.dashboard import data

    ov = data.overview(str(ws.root))
    assert dict(ov["funnel"])[data.PASSING] == len(want)
    assert ov["rule"]["consensus"] == "ds" and ov["kofn_passing"] == int((yes >= 2).sum())
    # A stricter threshold keeps a subset.
    select(ws, consensus="ds", min_posterior=0.99)
    strict = {r[0] for r in ws.store.query("SELECT sample_id FROM selections WHERE selected = 1")}
    assert strict == set(cons.posterior[cons.posterior >= 0.99].index) and strict < want
    # Options that do not go together are one error line each.
    for args in (["--min-posterior", "0.8"], ["--consensus", "ds", "--min-votes", "2"],
                 ["--consensus", "mean"], ["--consensus", "ds", "--min-posterior", "1.5"]):
        r = run_cli("select", ws.root, *args)
        assert r.code == 2 and r.err.startswith("error:"), (args, r.err)


def test_flagged_sample_is_never_selected_nor_exported(seeded_ws, tmp_path):
    ws = seeded_ws
    simulate(ws, 60, seed=5)
    unanimous = [r[0] for r in ws.store.query("SELECT sample_id FROM votes GROUP BY sample_id "
                                              "HAVING sum(vote) = 4 ORDER BY sample_id LIMIT 2")]
    before, after = unanimous
    adj.flag(ws, before, "the answer names the wrong object", reviewer="alice")
    for consensus in ("kofn", "ds"):
        select(ws, consensus=consensus)
        row = ws.store.one("SELECT selected, reason FROM selections WHERE sample_id = ?", (before,))
        assert tuple(row) == (0, "flagged by a reviewer"), consensus
    # Flagged after selection: export still leaves it out, selected-only or --all-ok.
    assert ws.store.scalar("SELECT selected FROM selections WHERE sample_id = ?", (after,)) == 1
    r = run_cli("adjudicate", ws.root, "--flag", after, "--reason", "duplicate of another sample")
    assert r.code == 0 and "flagged sample" in r.out, r.err
    for only in (True, False):
        path, n = export(ws, tmp_path / f"out-{only}.json", only_selected=only)
        ids = {rec["id"] for rec in json.loads(path.read_text())}
        assert before not in ids and after not in ids and len(ids) == n > 0
    f = adj.flags(ws).set_index("sample_id")
    assert f.loc[before, "reviewer"] == "alice" and f.loc[after, "reason"] == "duplicate of another sample"
    # Lifting the flag brings it back.
    assert adj.unflag(ws, after) and not adj.unflag(ws, after)
    path, _ = export(ws, tmp_path / "again.json")
    assert after in {rec["id"] for rec in json.loads(path.read_text())}
    with pytest.raises(WorkbenchError, match="reason"):
        adj.flag(ws, before, "  ")


def test_human_votes_are_a_referee_of_their_own_and_can_be_excluded(seeded_ws, monkeypatch):
    ws = seeded_ws
    simulate(ws, 300, seed=7)
    all_yes, all_no = (ws.store.scalar(f"SELECT sample_id FROM votes GROUP BY sample_id HAVING sum(vote) = {k} "
                                       "ORDER BY sample_id LIMIT 1") for k in (4, 0))
    monkeypatch.setattr("getpass.getuser", lambda: "bob")
    assert adj.vote(ws, all_yes, 0, reason="the answer is wrong") == "human:bob"
    assert adj.vote(ws, all_no, 1, reviewer="alice") == "human:alice"
    adj.vote(ws, all_no, 1, reviewer="alice")   # again: replaces, never a second row
    rows = {tuple(r[:4]) for r in ws.store.query(
        "SELECT sample_id, referee, vote, raw_text, voted_at FROM votes WHERE referee LIKE 'human:%'")}
    assert rows == {(all_yes, "human:bob", 0, "the answer is wrong"), (all_no, "human:alice", 1, "human")}
    assert ws.store.scalar("SELECT count(*) FROM votes WHERE referee LIKE 'human:%' AND voted_at IS NULL") == 0

    with_h = C.consensus(ws, include_human=True)
    without = C.consensus(ws, include_human=False)
    assert with_h.key != without.key and with_h.gold == 2 and without.gold == 0
    assert with_h.posterior[all_yes] == 0.0 and with_h.posterior[all_no] == 1.0
    assert without.posterior[all_yes] > 0.99 and without.posterior[all_no] < 0.01
    assert set(with_h.reliability["referee"]) == set(without.reliability["referee"]) == {"a", "b", "c", "d"}
    # k-of-N: a person's vote decides its sample.
    select(ws)
    got = dict(ws.store.query("SELECT sample_id, reason FROM selections WHERE sample_id IN (?, ?)", (all_yes, all_no)))
    assert got == {all_yes: "rejected by a human reviewer", all_no: None}
    # A vote is withdrawn, a rejected sample or a bad value is an error naming what to do.
    assert adj.unvote(ws, all_yes) and C.consensus(ws).gold == 1
    ws.store.conn.execute("UPDATE samples SET status = 'rejected' WHERE id = 's00001'")
    ws.store.conn.commit()
    with pytest.raises(WorkbenchError, match="rejected by the Q&A stage"):
        adj.vote(ws, "s00001", 1)
    with pytest.raises(WorkbenchError, match="1 .good. or 0"):
        adj.vote(ws, all_yes, 2)
    with pytest.raises(WorkbenchError, match="no such sample"):
        adj.vote(ws, "nothing-like-this", 1)
    with pytest.raises(WorkbenchError, match="more than one"):
        adj.vote(ws, "s0001", 1)            # a prefix of s00010..s00019
    with pytest.raises(WorkbenchError, match="reviewer name"):
        adj.vote(ws, all_yes, 1, reviewer="a:b")
    # The CLI takes a unique prefix and a reviewer.
    r = run_cli("adjudicate", ws.root, "--vote", "s00299", "1", "--reviewer", "carol")
    assert r.code == 0 and "human:carol voted 1 on sample s00299" in r.out, r.err
    r = run_cli("adjudicate", ws.root, "--vote", "s00299", "yes")
    assert r.code == 2 and "must be 1 (good) or 0 (bad)" in r.err
    r = run_cli("adjudicate", ws.root, "--flag", "s00299")
    assert r.code == 2 and "--reason" in r.err


def test_uncertainty_queue_orders_by_distance_from_half(seeded_ws):
    ws = seeded_ws
    simulate(ws, 40, seed=9)
    ids = [f"s{i:05d}" for i in range(10)]
    p = pd.Series([0.9, 0.45, 0.52, 0.1, 0.5, 0.72, 0.3, 0.99, 0.61, 0.4], index=ids)
    cons = C.Consensus(key="k", include_human=True, posterior=p, reliability=pd.DataFrame(),
                       per_node=pd.DataFrame(), prior=0.5, gold=0, computed_at="now")
    q = C.uncertain_queue(ws, cons, 6)
    assert q["sample_id"].tolist() == ["s00004", "s00002", "s00001", "s00009", "s00008", "s00006"]
    assert (np.diff(q["uncertainty"].to_numpy()) >= 0).all()
    assert q["uncertainty"].tolist() == pytest.approx((q["p_good"] - 0.5).abs().tolist())
    row = q.iloc[0]
    assert row["question"] == "question 4?" and row["task_type"].count("~") >= 1
    assert row["votes"].split() == [f"{r}={v}" for r, v in ws.store.query(
        "SELECT referee, vote FROM votes WHERE sample_id = 's00004' ORDER BY referee")]
    # Decided samples (a person's vote or a flag) leave the queue.
    adj.vote(ws, "s00004", 1, reviewer="x")
    adj.flag(ws, "s00002", "blurry image", reviewer="x")
    assert C.uncertain_queue(ws, cons, 3)["sample_id"].tolist() == ["s00001", "s00009", "s00008"]
    # The CLI lists the queue of the real fit, most uncertain first.
    r = run_cli("adjudicate", ws.root, "--queue", "5")
    assert r.code == 0, r.err
    listed = [line.split()[0] for line in r.out.splitlines() if line.startswith("s0")]
    real = C.consensus(ws)
    want = C.uncertain_queue(ws, real, 5)["sample_id"].tolist()
    assert listed == want and len(want) == 5
    assert "sensitivity" in r.out and "1 decided by a person" in r.out
    assert "fitting Dawid-Skene" in r.err
    r = run_cli("adjudicate", ws.root, "--queue", "40", "--exclude-human")
    assert r.code == 0 and "people's votes left out" in r.out, r.err
    listed = [line.split()[0] for line in r.out.splitlines() if line.startswith("s0")]
    assert len(listed) == 38 and not {"s00004", "s00002"} & set(listed)   # decided by a person either way


# -- dashboard -----------------------------------------------------------------------------------

def test_adjudicate_page_votes_and_flags(seeded_ws):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    ws = seeded_ws
    simulate(ws, 200, seed=11, images=4)
    from PIL import Image

    (ws.root / "imgs").mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (60 * i, 90, 30)).save(ws.root / "imgs" / f"img{i}.png")

    def page(**state):
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
        at.query_params["page"] = "adjudicate"
        os.environ["WORKBENCH_WORKSPACE"] = str(ws.root)
        at.session_state["adj_reviewer"] = "tester"
        for k, v in state.items():
            at.session_state[k] = v
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        return at

    at = page()
    cons = C.consensus(ws)
    queue = at.main.dataframe[0].value
    want = C.uncertain_queue(ws, cons, len(queue))
    assert queue["sample_id"].tolist() == want["sample_id"].tolist()
    first = queue["sample_id"].iloc[0]
    assert any(first in plain(md.value) for md in at.markdown)
    assert len(at.get("imgs")) >= 1 or len(at.get("image")) >= 1   # the thumbnail
    votes_shown = at.main.dataframe[1].value
    assert votes_shown["referee"].tolist() == ["a", "b", "c", "d"]
    rel = at.main.dataframe[2].value
    assert rel["referee"].tolist() == ["a", "b", "c", "d"]
    assert rel["accuracy"].tolist() == pytest.approx(cons.reliability["accuracy"].tolist())
    piv = at.main.dataframe[3].value   # accuracy per first-level category: a row per category, a column per referee
    assert list(piv.columns) == ["category", "a", "b", "c", "d"] and len(piv) == 2
    by_cat = cons.by_category(C.first_level(ws))
    assert piv.set_index("category").stack().sort_index().tolist() == pytest.approx(
        by_cat.set_index(["category", "referee"])["accuracy"].sort_index().tolist())
    assert not at.main.get("plotly_chart")   # the page needs no Plotly

    # Vote "0" with the page's button: it lands in the workspace as human:tester and leaves the queue. The click
    # does not refit (crowd-kit takes seconds even on a small table): the fit shown is marked stale until recomputed.
    fits = sorted(ws.arrays_dir.glob("consensus/*.npz"))
    at.button(key="adj_no").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert tuple(ws.store.one("SELECT vote, raw_text FROM votes WHERE sample_id = ? AND referee = 'human:tester'",
                              (first,))) == (0, "human")
    assert any("human:tester voted 0" in plain(s.value) for s in at.success)
    assert first not in at.main.dataframe[0].value["sample_id"].tolist()
    assert sorted(ws.arrays_dir.glob("consensus/*.npz")) == fits
    assert any("votes changed since" in w.value for w in at.warning)
    at.run()   # a rerun (any widget) does not refit either
    assert sorted(ws.arrays_dir.glob("consensus/*.npz")) == fits
    at.button(key="adj_recompute").click().run()
    assert not any("votes changed since" in w.value for w in at.warning)
    assert len(list(ws.arrays_dir.glob("consensus/*.npz"))) == len(fits) + 1
    assert C.consensus(ws).posterior[first] == 0.0
    # Flag the next one with a reason.
    nxt = at.main.dataframe[0].value["sample_id"].iloc[0]
    at.text_input(key="adj_reason").input("question does not fit the image").run()
    at.button(key="adj_flag").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert tuple(ws.store.one("SELECT reason, reviewer FROM sample_flags WHERE sample_id = ?", (nxt,))) == (
        "question does not fit the image", "tester")
    # Leaving human votes out: the metric says so, the fit ignores them.
    at.toggle(key="adj_include_human").set_value(False).run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["decided by a person"] == "left out"


def _adjudicate_app(root):
    """The dashboard opened on the Adjudicate page of `root`, reviewer "tester" (not yet run)."""
    from streamlit.testing.v1 import AppTest

    os.environ["WORKBENCH_WORKSPACE"] = str(root)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.query_params["page"] = "adjudicate"
    at.session_state["adj_reviewer"] = "tester"
    return at


def test_adjudicate_page_on_a_large_vote_table_shows_the_stored_fit_until_recomputed(seeded_ws, monkeypatch):
    pytest.importorskip("streamlit")
    from workbench.apps.dashboard.screens import adjudicate as page_adjudicate

    ws = seeded_ws
    simulate(ws, 120, seed=13, images=2)
    monkeypatch.setattr(page_adjudicate, "AUTO_COMPUTE_VOTES", 10)   # as if fitting took too long to do per click
    at = _adjudicate_app(ws.root)
    at.run()
    assert "Recompute consensus" in at.info[0].value and not list((ws.arrays_dir).glob("consensus/*.npz"))
    at.button(key="adj_recompute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    first = at.main.dataframe[0].value["sample_id"].iloc[0]
    at.button(key="adj_yes").click().run()
    assert not at.exception, [e.value for e in at.exception]
    # Not refitted: the stored fit is shown as stale, and the decided sample has left the queue.
    assert any("votes changed since" in w.value for w in at.warning)
    assert first not in at.main.dataframe[0].value["sample_id"].tolist()
    assert len(list(ws.arrays_dir.glob("consensus/*.npz"))) == 1
    at.button(key="adj_recompute").click().run()
    assert not any("votes changed since" in w.value for w in at.warning)
    assert len(list(ws.arrays_dir.glob("consensus/*.npz"))) == 2
    assert {m.label: m.value for m in at.metric}["decided by a person"] == "1"


def test_background_prewarm_fits_a_large_table_once_and_the_page_opens_on_its_queue(seeded_ws, monkeypatch):
    """A new large workspace has no stored fit: the dashboard's background prewarm fits it once (the page would
    otherwise open on "press Recompute"); once any fit is stored, stale or not, the prewarm leaves it alone."""
    pytest.importorskip("streamlit")
    from workbench.apps.dashboard.queries.adjudicate import votes_key_large
    from workbench.apps.dashboard.screens import adjudicate as page_adjudicate

    ws = seeded_ws
    simulate(ws, 120, seed=17, images=2)
    fits = lambda: sorted(ws.arrays_dir.glob("consensus/*.npz"))
    monkeypatch.setattr(page_adjudicate, "AUTO_COMPUTE_VOTES", 10)
    monkeypatch.setattr(page_adjudicate, "PREWARM_FIT_VOTES", 100)   # 480 votes: too many to fit in the background
    page_adjudicate.prewarm_late(str(ws.root))
    assert fits() == []
    monkeypatch.setattr(page_adjudicate, "PREWARM_FIT_VOTES", 10_000)
    page_adjudicate.prewarm_late(str(ws.root))
    assert len(fits()) == 1 and not page_adjudicate._BACKGROUND_FIT.is_set()

    at = _adjudicate_app(ws.root)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    said = [m.value for m in (*at.info, *at.warning)]   # (the simulated images are not on disk: a warning)
    assert not [m for m in said if "Recompute" in m or "votes changed" in m], said
    assert len(at.main.dataframe[0].value) == page_adjudicate.QUEUE_LEN
    at.button(key="adj_yes").click().run()        # the fit is now stale: shown, and not refitted in the background
    votes_key_large.clear()
    page_adjudicate.prewarm_late(str(ws.root))
    assert len(fits()) == 1


def test_adjudicate_page_says_a_background_fit_is_running(seeded_ws, monkeypatch):
    pytest.importorskip("streamlit")
    from workbench.apps.dashboard.screens import adjudicate as page_adjudicate

    simulate(seeded_ws, 60, seed=19, images=2)
    monkeypatch.setattr(page_adjudicate, "AUTO_COMPUTE_VOTES", 10)
    at = _adjudicate_app(seeded_ws.root)
    page_adjudicate._BACKGROUND_FIT.set()
    try:
        at.run()
    finally:
        page_adjudicate._BACKGROUND_FIT.clear()
    assert "in the background" in at.info[0].value and "Recompute consensus" in at.info[0].value


@pytest.mark.slow
def test_adjudication_session_in_chromium(tmp_path):
    """In a real browser: name the reviewer, vote on three queued samples, flag one, open a sample by URL."""
    from workbench.apps.dashboard.serve import CHROMIUM, CHROMIUM_ARGS, serve

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: install Debian's chromium (scripts/setup.sh --browser)")
    playwright = pytest.importorskip("playwright.sync_api")
    from tests.test_dashboard_app import _generator

    from workbench.core.store import Store

    gen = _generator()
    root = tmp_path / "ws"
    gen.build(root, gen.SMALL, log=lambda *a: None)
    store = Store(root / "workbench.sqlite")

    def idle(page):
        for _ in range(2):
            page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=60_000)
            page.wait_for_timeout(300)

    def shown_sample(page) -> str:
        return page.locator("p:has-text('Sample') code").first.inner_text()

    with serve(root) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/?page=adjudicate")
        page.wait_for_selector("[data-testid=stMain] [data-testid=stDataFrame]", timeout=90_000)
        idle(page)
        page.get_by_role("textbox", name="Reviewer").fill("pat")
        page.get_by_role("textbox", name="Reviewer").press("Enter")
        idle(page)
        voted = []
        for value in ("1", "0", "1"):
            voted.append(shown_sample(page))
            page.get_by_role("button", name="1 — good" if value == "1" else "0 — bad").click()
            page.wait_for_selector(f"text=human:pat voted {value} on {voted[-1]}", timeout=30_000)
            idle(page)
        flagged = shown_sample(page)
        reason = page.get_by_role("textbox", name="Reason (required to flag; kept with a vote)")
        reason.fill("answer contradicts the image")
        reason.press("Enter")
        idle(page)
        page.get_by_role("button", name="Flag").click()
        page.wait_for_selector(f"text=Flagged {flagged}", timeout=30_000)
        idle(page)
        assert page.locator("[data-testid=stException]").count() == 0
        # A sample opened by URL (as the Referees page can link to it).
        page.goto(f"{url}/?page=adjudicate&sample={voted[0]}")
        page.wait_for_selector(f"code:has-text('{voted[0]}')", timeout=60_000)
        browser.close()
    got = dict(store.query("SELECT sample_id, vote FROM votes WHERE referee = 'human:pat'"))
    assert got == dict(zip(voted, (1, 0, 1))) and len(set(voted)) == 3
    assert tuple(store.one("SELECT sample_id, reason, reviewer FROM sample_flags")) == (
        flagged, "answer contradicts the image", "pat")
