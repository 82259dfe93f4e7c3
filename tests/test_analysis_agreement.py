"""Referee agreement: Fleiss' kappa against the published worked example, Cohen's kappa by hand,
and the SQL vote patterns against per-sample computation."""

import itertools

import numpy as np
import pandas as pd
import pytest

from workbench.analysis import agreement
from workbench.taxonomy.model import Taxonomy

# Fleiss (1971) example as worked on Wikipedia: 10 subjects, 14 raters, 5 categories -> kappa 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_matches_worked_example():
    assert agreement.fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_weights_equal_repeated_rows():
    t = np.array([[3, 0], [1, 2], [0, 3], [2, 1]])
    w = np.array([5, 1, 2, 3])
    assert agreement.fleiss_kappa(t, w) == pytest.approx(agreement.fleiss_kappa(np.repeat(t, w, axis=0)))


def test_fleiss_rejects_uneven_rater_counts():
    with pytest.raises(ValueError, match="same number"):
        agreement.fleiss_kappa([[1, 1], [2, 1]])


def test_cohen_kappa_by_hand():
    # p_o = 0.75, p_e = 0.5*0.25 + 0.5*0.75 = 0.5 -> kappa 0.5
    assert agreement.cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)


def _insert_votes(ws, table):
    """table: {sample: {referee: vote or None}}; every sample gets a node and an image."""
    now = "2026-01-01T00:00:00"
    leaves = [n.id for n, _ in Taxonomy.of(ws).leaves()]
    with ws.store.write() as c:
        for i, (sid, votes) in enumerate(table.items()):
            c.execute("INSERT OR IGNORE INTO images(id, path, root, source, width, height, format, added_at) "
                      "VALUES (?, 'x.png', '/tmp', 's', 1, 1, 'PNG', ?)", (f"img{i}", now))
            c.execute("INSERT INTO samples(id, image_id, node_id, question, answer, status, created_at) "
                      "VALUES (?, ?, ?, 'q', 'a', 'ok', ?)", (sid, f"img{i}", leaves[i % 2], now))
            for ref, v in votes.items():
                c.execute("INSERT INTO votes(sample_id, referee, vote, valid, raw_text) VALUES (?, ?, ?, ?, ?)",
                          (sid, ref, v, int(v is not None), "garbled" if v is None else str(v)))
    return leaves


def test_patterns_give_the_same_figures_as_per_sample_votes(seeded_ws):
    rng = np.random.default_rng(1)
    table = {}
    for i in range(60):
        base = rng.random() < 0.6
        table[f"s{i:03d}"] = {r: (None if rng.random() < 0.05 else int(base if rng.random() < 0.8 else not base))
                              for r in ("a", "b", "c")}
    del table["s005"]["c"]  # a missing vote
    _insert_votes(seeded_ws, table)
    patterns, names = agreement.load_patterns(seeded_ws.store, by_node=True)
    assert names == ["a", "b", "c"]
    assert patterns["n"].sum() == 60

    rates = agreement.pass_rates(patterns, names).set_index("referee")
    for r in names:
        vals = [v[r] for v in table.values() if v.get(r) is not None]
        assert rates.at[r, "votes"] == len(vals)
        assert rates.at[r, "pass_rate"] == pytest.approx(np.mean(vals))
        assert rates.at[r, "invalid"] == sum(1 for v in table.values() if r in v and v[r] is None)

    from sklearn.metrics import cohen_kappa_score
    kappa = agreement.pairwise_kappa(patterns, names)
    for x, y in itertools.combinations(names, 2):
        both = [(v[x], v[y]) for v in table.values() if v.get(x) is not None and v.get(y) is not None]
        assert kappa.loc[x, y] == pytest.approx(cohen_kappa_score([p[0] for p in both], [p[1] for p in both]))

    full = [v for v in table.values() if all(v.get(r) is not None for r in names)]
    ones = np.array([sum(v.values()) for v in full])
    expected = agreement.fleiss_kappa(np.stack([3 - ones, ones], axis=1))
    assert agreement.fleiss_from_patterns(patterns, names) == pytest.approx(expected)

    per = agreement.agreement_by(patterns.assign(g=patterns["node_id"]), names, "g")
    assert per["samples"].sum() == len(full)

    dis = agreement.disagreements(seeded_ws.store, limit=1000)
    want = {s for s, v in table.items() if len({x for x in v.values() if x is not None}) > 1}
    assert set(dis["sample_id"]) == want
    votes = agreement.votes_of(seeded_ws.store, "s005")
    assert list(votes["referee"]) == ["a", "b"]


def test_no_votes_gives_empty_patterns(ws):
    patterns, names = agreement.load_patterns(ws.store)
    assert names == [] and patterns.empty
    assert np.isnan(agreement.fleiss_from_patterns(pd.DataFrame({"n": []}), []))


def test_people_are_not_referees_in_agreement_figures_unless_asked(seeded_ws):
    """A person's `human:<name>` vote decides its sample in select: it is not one more referee in κ, pass rates
    or disagreements, unless include_human=True."""
    table = {"s1": {"a": 1, "b": 1, "human:ann": 0},   # machines agree; the person overrides
             "s2": {"a": 1, "b": 0},
             "s3": {"human:ann": 1}}                    # only a person voted: no referee pattern
    _insert_votes(seeded_ws, table)
    store = seeded_ws.store
    assert agreement.referees(store) == ["a", "b"]
    assert agreement.referees(store, include_human=True) == ["a", "b", "human:ann"]
    patterns, names = agreement.load_patterns(store, by_node=False)
    assert names == ["a", "b"] and patterns["n"].sum() == 2
    assert agreement.pass_rates(patterns, names).set_index("referee").at["a", "votes"] == 2
    assert agreement.pairwise_kappa(patterns, names).shape == (2, 2)
    for fully in (False, True):
        p, n = agreement.load_patterns(store, by_node=False, fully_voted=fully, include_human=True)
        assert "human:ann" in n
    assert set(agreement.disagreements(store)["sample_id"]) == {"s2"}
    assert set(agreement.disagreements(store, include_human=True)["sample_id"]) == {"s1", "s2"}
