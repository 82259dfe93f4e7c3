"""Coverage figures: subtree sums, chart slices within the node cap, the paper's bins, long tail,
CLIP token counting."""

import numpy as np
import pytest

from workbench.analysis import coverage
from workbench.taxonomy.model import Taxonomy


@pytest.fixture
def tree(ws):
    t = Taxonomy.of(ws)
    for p in ["A~A1~a", "A~A1~b", "A~A2~c", "B~B1~d", "B~B1~e", "B~f"]:
        t.add_path(p)
    idx = t.index()
    ids = {n.name: n.id for n in idx.nodes.values()}
    import pandas as pd
    counts = pd.DataFrame({"images": {ids["a"]: 3, ids["c"]: 2, ids["d"]: 1},
                           "samples": {ids["a"]: 2, ids["d"]: 5}, "selected": {ids["d"]: 4}}).fillna(0)
    return coverage.node_frame(idx, counts).set_index("name"), ids, idx


def test_node_frame_sums_subtrees(tree):
    f, ids, _ = tree
    assert f.at["A", "task_types"] == 3 and f.at["B", "task_types"] == 3
    assert f.at["A", "images"] == 5 and f.at["A1", "images"] == 3
    assert f.at["A", "with_images"] == 2 and f.at["A", "cov_images"] == pytest.approx(2 / 3)
    assert f.at["B", "samples"] == 5 and f.at["B", "cov_samples"] == pytest.approx(1 / 3)
    assert f.at["e", "category"] == "B" and f.at["c", "path"] == "A~A2~c"
    assert bool(f.at["f", "is_leaf"]) and not bool(f.at["B1", "is_leaf"])


def test_load_counts_reads_stage_tables(ws):
    leaf = Taxonomy.of(ws).add_path("X~y")
    now = "2026-01-01"
    with ws.store.write() as c:
        for i in range(3):
            c.execute("INSERT INTO images(id, path, root, source, width, height, format, added_at) "
                      "VALUES (?, 'p', '/r', 's', 1, 1, 'PNG', ?)", (f"i{i}", now))
            c.execute("INSERT INTO matches(image_id, node_id, rank, score, match_key) VALUES (?, ?, 1, 0.3, 'k')",
                      (f"i{i}", leaf.id))
        c.execute("INSERT INTO samples(id, image_id, node_id, status, created_at) VALUES ('s1', 'i0', ?, 'ok', ?)",
                  (leaf.id, now))
        c.execute("INSERT INTO samples(id, image_id, node_id, status, created_at) "
                  "VALUES ('s2', 'i1', ?, 'rejected', ?)",
                  (leaf.id, now))
        c.execute("INSERT INTO selections(sample_id, selected, reason) VALUES ('s1', 1, 'ok')")
    counts = coverage.load_counts(ws.store)
    assert counts.loc[leaf.id].to_dict() == {"images": 3, "samples": 1, "selected": 1}


def test_tree_slice_depth_focus_and_cap(tree):
    f, ids, _ = tree
    frame = f.reset_index()
    top = coverage.tree_slice(frame, None, 1, "task_types", "cov_images")
    assert set(top.frame["name"]) == {"A", "B"} and set(top.frame["parent"]) == {""}
    two = coverage.tree_slice(frame, None, 2, "task_types", "cov_images")
    assert set(two.frame["name"]) == {"A", "B", "A1", "A2", "B1", "f"}
    focus = coverage.tree_slice(frame, ids["A"], 2, "images", "cov_images")
    assert set(focus.frame["name"]) == {"A", "A1", "A2", "a", "b", "c"}
    assert focus.frame.set_index("name").at["A", "parent"] == ""
    assert focus.frame.set_index("name").at["a", "value"] == 3
    # The cap: depth is reduced first ...
    capped = coverage.tree_slice(frame, None, 3, "task_types", "cov_images", max_nodes=6)
    assert capped.depth == 2 and len(capped.frame) <= 6
    # ... then the smallest children are folded, keeping branch totals.
    folded = coverage.tree_slice(frame, ids["A"], 1, "images", "cov_images", max_nodes=2)
    assert folded.truncated and len(folded.frame) <= 3
    kids = folded.frame[folded.frame["parent"] == ids["A"]]
    assert kids["value"].sum() == folded.frame.set_index("name").at["A", "value"]


def test_partition_lays_out_an_icicle(tree):
    f, ids, _ = tree
    frame = f.reset_index()
    # Whole tree, 3 levels by task types: A and B halve the height; A's children split it 2:1, biggest first.
    lay = coverage.partition(coverage.tree_slice(frame, None, 3, "task_types", "cov_images").frame).set_index("name")
    assert lay.loc[["A", "B"], "depth"].tolist() == [0, 0]
    assert (lay.at["A", "y0"], lay.at["A", "y1"]) == (0.0, 0.5) and (lay.at["B", "y0"], lay.at["B", "y1"]) == (0.5, 1.0)
    assert lay.at["A1", "depth"] == 1 and lay.at["a", "depth"] == 2
    assert (lay.at["A1", "y0"], lay.at["A1", "y1"]) == pytest.approx((0.0, 1 / 3))
    assert (lay.at["A2", "y0"], lay.at["A2", "y1"]) == pytest.approx((1 / 3, 0.5))
    assert lay.at["B1", "y1"] - lay.at["B1", "y0"] == pytest.approx(1 / 3)   # B1 holds 2 of B's 3 task types
    # Every child lies inside its parent's span, siblings do not overlap.
    for _name, row in lay.iterrows():
        if row["parent"]:
            parent = lay[lay["id"] == row["parent"]].iloc[0]
            assert parent["y0"] - 1e-9 <= row["y0"] < row["y1"] <= parent["y1"] + 1e-9
    # Focused and sized by images: a node without images takes no room; the focus is the whole height.
    lay = coverage.partition(coverage.tree_slice(frame, ids["A"], 2, "images", "cov_images").frame).set_index("name")
    assert "b" not in lay.index and lay.at["A", "depth"] == 0 and (lay.at["A", "y0"], lay.at["A", "y1"]) == (0, 1)
    assert lay.at["a", "y1"] - lay.at["a", "y0"] == pytest.approx(3 / 5) and lay.at["c", "depth"] == 2


def test_treemap_nests_children_inside_their_parents(tree):
    f, ids, _ = tree
    frame = f.reset_index()
    lay = coverage.treemap(coverage.tree_slice(frame, None, 3, "task_types", "cov_images").frame, 300, 200,
                           header=10, pad=1).set_index("name")
    area = (lay["x1"] - lay["x0"]) * (lay["y1"] - lay["y0"])
    assert area["A"] + area["B"] == pytest.approx(300 * 200)   # the tops fill the canvas
    assert area["A"] == pytest.approx(area["B"])                 # 3 task types each
    assert area["A1"] == pytest.approx(2 * area["A2"])           # siblings by value
    assert lay.at["a", "depth"] == 2 and list(lay["depth"]) == sorted(lay["depth"])   # parents drawn first
    for name, row in lay.iterrows():
        if row["parent"]:
            p = lay[lay["id"] == row["parent"]].iloc[0]
            assert p["x0"] < row["x0"] and row["x1"] < p["x1"] and p["y0"] < row["y0"] and row["y1"] < p["y1"], name
    kids = lay[lay["parent"] == ids["A"]]   # siblings do not overlap
    (a, b) = kids.itertuples()
    assert a.x1 <= b.x0 + 1e-9 or b.x1 <= a.x0 + 1e-9 or a.y1 <= b.y0 + 1e-9 or b.y1 <= a.y0 + 1e-9


def test_paper_bins_and_labels():
    bins = coverage.paper_bins(45)
    assert [b[2] for b in bins] == ["0", "1–10", "11–20", "21–40", "41–80"]
    labels = coverage.bin_labels(np.array([0, 1, 10, 11, 20, 21, 40, 41, 45]), bins)
    assert list(labels) == ["0", "1–10", "1–10", "11–20", "11–20", "21–40", "21–40", "41–80", "41–80"]


def test_histogram_counts_task_types(tree):
    f, _, _ = tree
    leaves = f[f["is_leaf"]].reset_index()
    hist, _ = coverage.histogram(leaves, "samples")
    assert dict(zip(hist["bin"], hist["task_types"])) == {"0": 4, "1–10": 2}
    by_cat, _ = coverage.histogram(leaves, "samples", by_category=True)
    assert by_cat["task_types"].sum() == 6
    assert set(by_cat["category"]) == {"A", "B"}


def test_long_tail_figures():
    t = coverage.long_tail([0, 0, 1, 1, 2, 100, 5, 5, 5, 1])
    assert t["task_types"] == 10 and t["total"] == 120 and t["zero"] == 2 and t["at_most_10"] == 9
    assert t["top10pct_share"] == pytest.approx(100 / 120)
    assert t["max"] == 100 and 0.5 < t["gini"] < 1
    assert coverage.long_tail([3, 3, 3])["gini"] == pytest.approx(0.0)


def test_clip_token_lengths_flags_long_paths():
    pytest.importorskip("open_clip")
    short = "Scene text~Reading~Street signs"
    long = "~".join(["a very long category name with many words in it"] * 8)
    rep = coverage.clip_token_lengths([short, long], "ViT-B-32")
    assert rep.context_length == 77
    assert rep.tokenizer.startswith("open_clip")
    assert rep.lengths[0] < 20 and rep.lengths[1] > 77
    assert list(rep.too_long) == [False, True]
    assert coverage.template_texts(["A~B"], "a photo for {leaf} ({path})") == ["a photo for B (A~B)"]
