import pandas as pd

from workbench.stages.select.stage import choose, water_fill


def table(spec):
    """spec: {node: [yes votes per sample]}"""
    rows = [{"sample_id": f"{n}-{i}", "node_id": n, "yes": y} for n, ys in spec.items() for i, y in enumerate(ys)]
    return pd.DataFrame(rows)


def selected(out):
    return set(out.loc[out["selected"] == 1, "sample_id"])


def test_k_of_n_votes():
    out, _ = choose(table({"a": [3, 2, 1, 0]}), min_votes=2)
    assert selected(out) == {"a-0", "a-1"}
    assert set(out.loc[out["selected"] == 0, "reason"]) == {"fewer than 2 positive votes"}


def test_cap_floor_and_seed_reproducible():
    t = table({"big": [3] * 10, "small": [3], "mid": [2] * 3})
    out, _ = choose(t, min_votes=2, max_per_task=2, min_per_task=2, seed=7)
    sel = selected(out)
    assert sum(s.startswith("big") for s in sel) == 2 and sum(s.startswith("mid") for s in sel) == 2
    assert not any(s.startswith("small") for s in sel)
    again, _ = choose(t.sample(frac=1, random_state=1), min_votes=2, max_per_task=2, min_per_task=2, seed=7)
    assert selected(again) == sel
    other, _ = choose(t, min_votes=2, max_per_task=2, min_per_task=2, seed=8)
    assert len(selected(other)) == len(sel)
    picks = {frozenset(selected(choose(t, min_votes=2, max_per_task=2, seed=s)[0])) for s in range(6)}
    assert len(picks) > 1  # the seed does drive which samples are taken


def test_budget_spreads_over_tasks():
    t = table({"big": [3] * 100, "b": [3] * 5, "c": [3] * 5, "d": [3] * 2})
    out, quota = choose(t, min_votes=1, budget=16)
    sel = selected(out)
    counts = {n: sum(s.startswith(n + "-") for s in sel) for n in ("big", "b", "c", "d")}
    assert sum(counts.values()) == 16
    assert counts["d"] == 2 and counts["b"] >= 4 and counts["c"] >= 4 and counts["big"] <= 5
    assert quota == 4


def test_water_fill():
    import numpy as np

    assert water_fill(np.array([100, 5, 5, 2]), 16) == 4
    assert water_fill(np.array([1, 1]), 10) == 1
