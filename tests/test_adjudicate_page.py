"""The Adjudicate page's click path on a vote table too large to refit per click: a vote neither re-reads the
whole vote table (its content key) nor re-ranks the posterior; the decided sample still leaves the queue and the
fit shown is marked stale until recomputed."""

from __future__ import annotations

import os

import pytest
from tests.test_consensus import REPO, simulate

from workbench.stages.select import consensus as C


def test_a_vote_on_a_large_table_does_not_rescan_the_votes(seeded_ws, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from workbench.apps.dashboard.screens import adjudicate as page_adjudicate

    ws = seeded_ws
    simulate(ws, 300, seed=5, images=2)
    C.consensus(ws)   # stored, as `workbench adjudicate` leaves it
    monkeypatch.setattr(page_adjudicate, "AUTO_COMPUTE_VOTES", 10)   # as at paper scale
    monkeypatch.setattr(page_adjudicate, "QUEUE_LEN", 5)
    monkeypatch.setattr(page_adjudicate, "CANDIDATES", 8)
    calls = {"votes_version": 0, "uncertain_queue": 0}
    for name in calls:
        real = getattr(C, name)

        def counted(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)
        monkeypatch.setattr(C, name, counted)
    os.environ["WORKBENCH_WORKSPACE"] = str(ws.root)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.query_params["page"] = "adjudicate"
    at.session_state["adj_reviewer"] = "tester"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any("votes changed since" in w.value for w in at.warning)   # the stored fit is current
    before = dict(calls)
    assert before["votes_version"] >= 1 and before["uncertain_queue"] == 1

    decided = []
    for _ in range(5):   # more than the 8 candidates minus the 5 shown: the queue is re-ranked once
        first = at.main.dataframe[0].value["sample_id"].iloc[0]
        decided.append(first)
        at.button(key="adj_yes").click().run()
        assert not at.exception, [e.value for e in at.exception]
        queue = at.main.dataframe[0].value["sample_id"].tolist()
        assert first not in queue and len(queue) == 5
        assert any("votes changed since" in w.value for w in at.warning)
    assert calls["votes_version"] == before["votes_version"]   # no pass over the vote table per click
    assert calls["uncertain_queue"] == 2                         # ranked at open, once more when used up
    assert not set(decided) & set(at.main.dataframe[0].value["sample_id"])
    assert ws.store.scalar("SELECT count(*) FROM votes WHERE referee = 'human:tester'") == 5

    at.button(key="adj_recompute").click().run()   # a refit reads the votes as they are now
    assert not at.exception
    assert calls["votes_version"] > before["votes_version"]
    assert not any("votes changed since" in w.value for w in at.warning)
    assert {m.label: m.value for m in at.metric}["decided by a person"] == "5"
