"""The Gaps page driven by AppTest: discovered clusters with exemplars and the reference's gaps, and the one
click that adds a `proposed` node with its provenance (origin 'discovered' / 'reference')."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from clip_fixtures import make_images
from conftest import plain
from workbench.taxonomy.model import Taxonomy

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def root(tmp_path):
    from workbench.core.workspace import Workspace
    from workbench.stages.images.register import register_images
    from workbench.taxonomy.io import load_seed

    root = tmp_path / "ws"
    with Workspace.init(root) as ws:
        load_seed(Taxonomy.of(ws))
        files = make_images(tmp_path / "imgs", 4, size=(24, 20))
        register_images(ws, files, root=tmp_path / "imgs", workers=1)
        ids = [r["id"] for r in ws.store.query("SELECT id FROM images ORDER BY id")]
        leaf, path = Taxonomy.of(ws).leaves()[0]
        with ws.store.write() as c:
            c.execute("INSERT INTO discoveries(cluster, cluster_key, size, cohesion, image_ids, exemplar_ids, nearest, "
                      "parent_id, name, status, duplicate_of, note, created_at) VALUES (0, 'k', 4, 0.8, ?, ?, ?, ?, "
                      "'Counting sheep', 'duplicate', ?, 'repeats a sibling (embedding 0.91)', 't')",
                      (json.dumps(ids), json.dumps(ids[:3]), json.dumps([{"node_id": leaf.id, "path": path,
                                                                          "score": 0.21}]),
                       leaf.parent_id, leaf.id))
    return root


def run(root, state=None):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.query_params["page"] = "gaps"
    os.environ["WORKBENCH_WORKSPACE"] = str(root)
    for k, v in (state or {}).items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _nodes(root, origin):
    from workbench.core.workspace import Workspace

    with Workspace.open(root) as ws:
        return [(n.name, n.status, n.parent_id, n.note) for n in Taxonomy.of(ws).nodes() if n.origin == origin]


def test_discovered_cluster_shows_exemplars_and_one_click_adds_a_proposed_node(root):
    at = run(root)
    assert sum(type(e).__name__ == "Image" for e in at.main) == 3     # the three exemplar thumbnails
    table = at.main.dataframe[0].value
    assert list(table["name"]) == ["Counting sheep"] and list(table["status"]) == ["duplicate"]
    at.text_input(key="gaps_disc_1_name").set_value("Counting sheep in fields")
    at.button(key="gaps_disc_1_add").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    added = _nodes(root, "discovered")
    assert [(n, s) for n, s, _, _ in added] == [("Counting sheep in fields", "proposed")]
    assert "cluster #1" in added[0][3]
    from workbench.core.workspace import Workspace

    with Workspace.open(root) as ws:
        assert ws.store.scalar("SELECT status FROM discoveries") == "proposed"
        assert ws.store.scalar("SELECT node_id FROM discoveries") is not None


def test_reference_gaps_with_nearest_task_types_and_add(root):
    at = run(root, {"gaps_section": "reference"})
    labels = {m.label: m.value for m in at.metric}
    assert int(labels["reference tasks"]) == int(labels["covered"]) + int(labels["gaps"]) and int(labels["gaps"]) > 0
    assert len(at.main.get("plotly_chart")) == 2
    assert any("How far to trust it: measured" in c.value and "held-out P" in c.value for c in at.caption)
    gap = at.selectbox(key="gaps_gap").value
    cands = at.main.dataframe[-1].value
    assert "nearest task types" in cands.columns and cands["score"].is_monotonic_decreasing
    at.button(key="gaps_ref_add_add").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    added = _nodes(root, "reference")
    assert len(added) == 1 and added[0][0] == gap.split("~")[-1] and added[0][1] == "proposed"
    assert gap in added[0][3]


def test_audits_section_empty_state(root):
    at = run(root, {"gaps_section": "audits"})
    assert any("workbench audit" in i.value for i in at.info)


def test_reference_section_asks_before_minutes_of_embedding(root, monkeypatch):
    """A tree whose text embeddings are not cached yet and too many to embed on opening: the section says how
    many and how long, and matches only when asked; afterwards the cache makes nothing pending."""
    from workbench.analysis.reference_coverage import pending_embeddings
    from workbench.apps.dashboard.screens import gaps as page_gaps
    from workbench.core.workspace import Workspace

    with Workspace.open(root) as ws:
        before = pending_embeddings(ws)
    assert before > 0
    monkeypatch.setattr(page_gaps, "INLINE_EMBED_MAX", 0)
    at = run(root, {"gaps_section": "reference"})
    assert any(f"{before:,} texts" in i.value and "workbench taxonomy coverage" in i.value for i in at.info)
    assert not at.metric and not at.main.get("plotly_chart")
    at.button(key="gaps_embed_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label for m in at.metric} >= {"reference tasks", "covered", "gaps"}
    with Workspace.open(root) as ws:
        assert pending_embeddings(ws) == 0


@pytest.fixture
def matched(root):
    """The root workspace with its 4 images matched to counting (best) and one Q&A sample per image."""
    from workbench.core.workspace import Workspace

    with Workspace.open(root) as ws:
        count = Taxonomy.of(ws).find("object recognition~object counting")
        ids = [r["id"] for r in ws.store.query("SELECT id FROM images ORDER BY id")]
        with ws.store.write() as c:
            for k, img in enumerate(ids):
                c.execute("INSERT INTO matches(image_id, node_id, rank, score, match_key) VALUES (?, ?, 1, ?, 'mk')",
                          (img, count.id, 0.3 - k / 100))
                c.execute("INSERT INTO samples(id, image_id, node_id, label, question, answer, status, created_at) "
                          "VALUES (?, ?, ?, 'object counting', ?, '3', 'ok', 't')",
                          (f"s{k}", img, count.id, f"How many sheep in picture {k}?"))
    return root


def _frame(at, column):
    """The drill-down's table that has this column (images: rank, samples: question)."""
    return next(d.value for d in at.main.dataframe if column in d.value.columns)


def test_drill_lists_a_categorys_items_with_thumbnails_and_flags_them(matched):
    at = run(matched, {"gaps_section": "drill", "gaps_drill_kind": "category",
                       "gaps_drill_cat": "object recognition"})
    assert sum(type(e).__name__ == "Image" for e in at.main) == 4          # one thumbnail per image
    images = _frame(at, "rank")
    assert len(images) == 4 and images["score"].is_monotonic_decreasing
    samples = _frame(at, "question")
    assert len(samples) == 4 and samples["question"].str.contains("sheep").all() and samples["flag"].isna().all()
    at.text_input(key="gaps_drill_flag_reason").set_value("wrong counts")
    at.button(key="gaps_drill_flag").click().run()
    assert not at.exception, [e.value for e in at.exception]
    samples = _frame(at, "question")                  # the effect shows at once
    assert samples["flag"].str.contains("wrong counts").all()
    assert any("flagged 4 sample(s)" in plain(s.value) for s in at.success)
    # a proposal from a category goes inside it, recorded as a manual gap proposal
    assert at.selectbox(key="gaps_drill_add_category_parent").value == "object recognition"
    at.text_input(key="gaps_drill_add_category_name").set_value("sheep counting")
    at.button(key="gaps_drill_add_category_add").click().run()
    added = _nodes(matched, "manual")
    assert [(n, s) for n, s, _, _ in added] == [("sheep counting", "proposed")] and "gap (category)" in added[0][3]


def test_drill_empty_task_type_and_cluster(matched):
    at = run(matched, {"gaps_section": "drill", "gaps_drill_kind": "empty"})
    assert at.selectbox(key="gaps_drill_empty").value != "object recognition~object counting"
    assert any("no image has these task types" in i.value for i in at.info)
    at = run(matched, {"gaps_section": "drill", "gaps_drill_kind": "cluster"})
    assert len(_frame(at, "rank")) == 4     # the cluster's images, best match shown
    from workbench.core.workspace import Workspace

    with Workspace.open(matched) as ws:   # the parent the cluster's name was meant to go under
        parent = Taxonomy.of(ws).path(ws.store.scalar("SELECT parent_id FROM discoveries"))
    assert at.selectbox(key="gaps_drill_add_cluster_parent").value == parent
    at.text_input(key="gaps_drill_add_cluster_name").set_value("sheep herding")
    at.button(key="gaps_drill_add_cluster_add").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    added = _nodes(matched, "discovered")
    assert [n for n, *_ in added] == ["sheep herding"] and "cluster #1" in added[0][3]
    with Workspace.open(matched) as ws:
        assert ws.store.scalar("SELECT status FROM discoveries") == "proposed"
