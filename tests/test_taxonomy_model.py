import pytest

from workbench.core.errors import TaxonomyError
from workbench.taxonomy.model import Provenance, Taxonomy


def paths(ws, statuses=("proposed", "accepted")):
    return sorted(p for _, p in Taxonomy.of(ws).leaves(statuses))


def test_add_builds_levels_paths_and_provenance(ws):
    t = Taxonomy.of(ws)
    with ws.stage_run("expand", {"level": 2}) as r:
        run = r.id
    ocr = t.add("OCR")
    child = t.add("scene  text", ocr.id, origin="generated", status="proposed",
                  provenance=Provenance(run, "prompts/x.j2", "abc123", "gpt-4o"))
    assert child.level == 2 and child.name == "scene text"
    assert (child.stage_run_id, child.prompt_file, child.prompt_hash, child.model) == (run, "prompts/x.j2", "abc123",
                                                                                      "gpt-4o")
    assert t.path(child.id) == "OCR~scene text"
    assert t.find("ocr ~ SCENE TEXT").id == child.id
    assert t.find("ocr\u223cscene text").id == child.id
    assert paths(ws) == ["OCR~scene text"]


def test_sibling_names_are_unique_case_insensitively(ws):
    t = Taxonomy.of(ws)
    ocr = t.add("OCR")
    t.add("Scene Text", ocr)
    with pytest.raises(TaxonomyError, match="already exists under 'OCR'"):
        t.add("scene   text", ocr)
    t.add("scene text")  # same name at another place is fine
    with pytest.raises(TaxonomyError, match="level separator"):
        t.add("a\u223cb")
    with pytest.raises(TaxonomyError, match="'/'"):
        t.add("a/b")


def test_ids_are_stable_across_rename_and_move_and_deterministic(ws, tmp_path):
    from workbench.core.workspace import Workspace

    t = Taxonomy.of(ws)
    a = t.add_path("ocr~scene text")
    other = Taxonomy.of(Workspace.init(tmp_path / "other")).add_path("OCR~Scene Text")
    assert other.id == a.id  # derived from the path at creation
    renamed = t.rename(a.id, "street text")
    assert renamed.id == a.id and t.path(a.id) == "ocr~street text"
    t.add("reasoning")
    moved = t.move(a.id, t.find("reasoning").id)
    assert moved.id == a.id and moved.level == 2 and t.path(a.id) == "reasoning~street text"
    # Re-creating the old path gets a fresh id, not the one in use.
    again = t.add_path("ocr~scene text")
    assert again.id != a.id


def test_move_updates_levels_of_the_subtree_and_refuses_cycles(ws):
    t = Taxonomy.of(ws)
    leaf = t.add_path("a~b~c~d")
    b = t.find("a~b")
    t.move(b.id, None)
    assert t.get(b.id).level == 1 and t.get(leaf.id).level == 3
    assert t.path(leaf.id) == "b~c~d"
    with pytest.raises(TaxonomyError, match="inside its own subtree"):
        t.move(b.id, t.find("b~c").id)
    t.add("b", t.find("a"))
    with pytest.raises(TaxonomyError, match="already exists"):
        t.move(t.find("a~b").id, None)


def test_delete_removes_subtree_and_attached_rows(ws):
    t = Taxonomy.of(ws)
    leaf = t.add_path("a~b~c")
    t.add_path("a~x")
    _attach_match(ws, "img1", leaf.id)
    assert t.delete("a~b") == 2
    assert paths(ws) == ["a~x"]
    assert ws.store.scalar("SELECT count(*) FROM matches") == 0
    assert ws.store.scalar("SELECT count(*) FROM nodes WHERE parent_id NOT IN (SELECT id FROM nodes)") == 0


def test_reject_hides_subtree_from_task_types(ws):
    t = Taxonomy.of(ws)
    t.add_path("a~b~c")
    t.add_path("a~d")
    t.reject("a~b")
    assert paths(ws) == ["a~d"]
    assert paths(ws, None) == ["a~b~c", "a~d"]
    t.accept(["a~b"])
    assert paths(ws) == ["a~b~c", "a~d"]


def test_count_leaves_agrees_with_the_tree_index_as_statuses_change(ws):
    """The overview counts task types in SQL: it must count exactly the index's leaves (a node whose only children
    are rejected becomes a task type; a rejected subtree is not reachable)."""
    t = Taxonomy.of(ws)
    t.add_path("a~b~c")
    t.add_path("a~b~e")
    t.add_path("a~d")
    t.add_path("f")

    def agree(statuses=("proposed", "accepted")):
        assert t.count_leaves(statuses) == len(t.leaves(statuses))
        return t.count_leaves(statuses)
    assert agree() == 4
    t.reject("a~b~c")
    assert agree() == 3 and agree(("rejected",)) == 0
    t.reject("a~b~e")                      # b's children all rejected: b is now a task type
    assert agree() == 3 and paths(ws) == ["a~b", "a~d", "f"]
    t.reject("a")                          # the whole subtree unreachable
    assert agree() == 1 and agree(("proposed", "accepted", "rejected")) == 4


def _attach_match(ws, image_id, node_id, rank=1):
    with ws.store.write() as c:
        c.execute("INSERT OR IGNORE INTO images(id, path, root, source, width, height, format, added_at) "
                  "VALUES (?, ?, '/r', 's', 1, 1, 'PNG', 'now')", (image_id, image_id + ".png"))
        c.execute("INSERT INTO matches(image_id, node_id, rank, score, match_key) VALUES (?,?,?,0.5,'k')",
                  (image_id, node_id, rank))


def test_merge_moves_children_and_attached_rows_and_keeps_alias(ws):
    t = Taxonomy.of(ws)
    keep = t.add_path("ocr~scene text~signs")
    t.add_path("ocr~scene text~menus")
    gone_leaf = t.add_path("ocr~street text~signs")     # same name as a survivor child: merged recursively
    gone_other = t.add_path("ocr~street text~plates")   # moved under the survivor
    victim = t.find("ocr~street text")
    _attach_match(ws, "img1", gone_leaf.id)
    _attach_match(ws, "img2", gone_leaf.id)
    _attach_match(ws, "img2", keep.id, rank=2)          # img2 already matched to the survivor: duplicate dropped
    survivor = t.merge(victim.id, "ocr~scene text")
    assert paths(ws) == ["ocr~scene text~menus", "ocr~scene text~plates", "ocr~scene text~signs"]
    assert t.get(gone_other.id).level == 3
    assert t.get(victim.id).id == survivor.id                 # alias resolves
    assert t.get(gone_leaf.id).id == keep.id
    rows = ws.store.query("SELECT image_id, node_id FROM matches ORDER BY image_id")
    assert [(r[0], r[1]) for r in rows] == [("img1", keep.id), ("img2", keep.id)]
    assert ws.store.scalar("SELECT count(*) FROM nodes WHERE parent_id IS NOT NULL "
                           "AND parent_id NOT IN (SELECT id FROM nodes)") == 0
    with pytest.raises(TaxonomyError, match="own descendant"):
        t.merge("ocr", "ocr~scene text")
    with pytest.raises(TaxonomyError, match="into itself"):
        t.merge("ocr", "ocr")


def test_unknown_node_is_a_clear_error(ws):
    with pytest.raises(TaxonomyError, match="no node with id or path 'nope'"):
        Taxonomy.of(ws).rename("nope", "x")
    with pytest.raises(TaxonomyError, match="status must be one of"):
        Taxonomy.of(ws).set_status([], "maybe")


def test_stats_figures(ws):
    from workbench.taxonomy.stats import compute_stats

    t = Taxonomy.of(ws)
    for p in ["a~a1~x", "a~a1~y", "a~a2", "b~b1", "c"]:
        t.add_path(p)
    st = compute_stats(t)
    assert (st.nodes, st.leaves, st.max_depth) == (8, 5, 3)
    assert [(lv.level, lv.nodes, lv.leaves) for lv in st.levels] == [(1, 3, 1), (2, 3, 2), (3, 2, 2)]
    assert st.levels[0].branching_mean == 1.5 and st.levels[0].branching_max == 2
    assert st.leaf_depths == {1: 1, 2: 2, 3: 2}
    assert st.largest_subtree == "a" and st.largest_subtree_leaves == 3
    assert st.largest_subtree_share == pytest.approx(0.6)
    assert any("largest first-level subtree" in line for line in st.lines())
