"""The notebooks' map (`apps/notebook_map.py`): a stored projection drawn with every first-level category in the
legend, a selection given as ids turned into the dashboard map's actions (propose, flag, export)."""

from __future__ import annotations

import numpy as np
import pytest

from clip_fixtures import make_images
from workbench.analysis import projection
from workbench.apps import notebook_map as nbmap
from workbench.core.errors import WorkbenchError
from workbench.taxonomy.model import Taxonomy

pytestmark = pytest.mark.timeout(120)
COUNTING = "object recognition~object counting"
COLOUR = "object recognition~object attribute recognition~color recognition"


def map_workspace(tmp_path):
    """The seed taxonomy; 4 images, the first two matched best to counting (with one Q&A sample each), the others
    to colour recognition; a stored projection (key `k1`) of the 4 images, 2 task types and a node that is no
    longer a leaf. `ws.ids`: the image ids."""
    from workbench.core.workspace import Workspace
    from workbench.stages.images.register import register_images
    from workbench.taxonomy.io import load_seed

    w = Workspace.init(tmp_path / "ws")
    tax = Taxonomy.of(w)
    load_seed(tax)
    register_images(w, make_images(tmp_path / "imgs", 4, size=(24, 20)), root=tmp_path / "imgs", workers=1)
    ids = [r["id"] for r in w.store.query("SELECT id FROM images ORDER BY id")]
    count, colour = tax.find(COUNTING), tax.find(COLOUR)
    with w.store.write() as c:
        for k, img in enumerate(ids):
            first, second = (count, colour) if k < 2 else (colour, count)
            for rank, node in ((1, first), (2, second)):
                c.execute("INSERT INTO matches(image_id, node_id, rank, score, match_key) VALUES (?, ?, ?, ?, 'mk')",
                          (img, node.id, rank, 0.3 - rank / 10))
        for k, img in enumerate(ids[:2]):
            c.execute("INSERT INTO samples(id, image_id, node_id, label, question, answer, status, created_at) "
                      "VALUES (?, ?, ?, 'object counting', 'How many?', '3', 'ok', 't')", (f"s{k}", img, count.id))
    inner = colour.parent_id   # "object attribute recognition": has children, so it is no task type
    items = [("image", i) for i in ids] + [("task", count.id), ("task", colour.id), ("task", inner)]
    coords = np.arange(len(items) * 2, dtype=np.float32).reshape(-1, 2)
    projection.save(w, "k1", "umap", projection.DEFAULT_PARAMS, coords, items)
    w.ids = ids
    return w


@pytest.fixture
def ws(tmp_path):
    w = map_workspace(tmp_path)
    yield w
    w.close()


def _view(ws):
    proj = projection.load(ws, "k1")
    return nbmap.MapView(ws, proj, projection.points(ws, proj))


def test_points_have_first_level_categories_and_drop_inner_nodes(ws):
    df = projection.points(ws, projection.load(ws, "k1"))
    assert len(df) == 6                                                  # the inner node is not drawn
    assert set(df["category"]) == {"object recognition"}
    assert df.loc[df["kind"] == "task", "label"].tolist() == [COUNTING, COLOUR]
    with ws.store.write() as c:
        c.execute("DELETE FROM matches WHERE image_id = ?", (ws.ids[3],))
    df = projection.points(ws, projection.load(ws, "k1"))
    assert df.loc[df["item_id"] == ws.ids[3], "category"].item() == projection.UNMATCHED


def test_every_category_has_its_own_colour_in_the_legend(ws):
    cats = [f"c{i}" for i in range(300)] + [projection.UNMATCHED]
    colours = nbmap.palette(cats)
    assert set(colours) == set(cats) and colours[projection.UNMATCHED] == nbmap.GREY
    assert len({colours[c] for c in cats[:256]}) == 256              # Glasbey: 256 distinct colours
    pytest.importorskip("jscatter")
    from matplotlib.colors import to_rgba

    names = ["b category", "a category", projection.UNMATCHED, "c category"]
    df = projection.points(ws, projection.load(ws, "k1"))
    df["category"] = [names[i % 4] for i in range(len(df))]
    view = nbmap.MapView(ws, projection.load(ws, "k1"), df)
    legend = {cat: rgba for cat, rgba, _ in view.scatter.widget.legend_encoding["color"]["values"]}
    assert list(legend) == ["a category", "b category", "c category", projection.UNMATCHED]   # every one, sorted
    assert len(set(legend.values())) == 4
    assert all(tuple(legend[c]) == to_rgba(view.colours[c]) for c in legend)
    assert "lasso" in view.line() and "categories: 4" in view.line()


def test_a_selection_given_as_ids_becomes_the_maps_actions(ws, tmp_path):
    view = _view(ws)
    assert not view.selection()                                          # nothing lassoed yet
    count_id = Taxonomy.of(ws).find(COUNTING).id
    sel = view.select([ws.ids[0], ws.ids[1], count_id])
    assert sel.image_ids == ws.ids[:2] and sel.task_ids == [count_id]
    if view.scatter is not None:                                         # shown on the map, read back as ids
        assert view.selection() == sel
    with pytest.raises(WorkbenchError, match="not points of this map"):
        view.select(["nope"])
    d = nbmap.drill(ws, sel)
    assert d.parent_path == "object recognition" and len(d.samples) == 2
    node = nbmap.propose(ws, sel, "sheep counting")
    tax = Taxonomy.of(ws)
    assert node.status == "proposed" and tax.path(node.id) == "object recognition~sheep counting"
    assert "map selection" in ws.store.scalar("SELECT note FROM nodes WHERE id=?", (node.id,))
    assert nbmap.flag(ws, sel, "blurry") == ["s0", "s1"]
    reasons = [r["reason"] for r in ws.store.query("SELECT reason FROM sample_flags ORDER BY sample_id")]
    assert len(reasons) == 2 and all(r.startswith("blurry [gap (map selection)") for r in reasons)
    path = nbmap.export_ids(sel, tmp_path / "sel.tsv")
    assert path.read_text().splitlines() == ["kind\tid", f"image\t{ws.ids[0]}", f"image\t{ws.ids[1]}",
                                             f"task\t{count_id}"]
    assert nbmap.read_selection(path) == sel                           # an export selects the same points again
    with pytest.raises(WorkbenchError, match="no images in the selection"):
        nbmap.propose(ws, nbmap.Selection(task_ids=[count_id]), "x")
    with pytest.raises(WorkbenchError, match="a flag needs a reason"):
        nbmap.flag(ws, sel, " ")


def test_a_bad_selection_file_names_its_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("kind\tid\nimage\tabc\npicture\tdef\n")
    with pytest.raises(WorkbenchError, match=r"bad.tsv:3: expected"):
        nbmap.read_selection(bad)
    with pytest.raises(WorkbenchError, match="cannot read the selection"):
        nbmap.read_selection(tmp_path / "missing.tsv")


def test_without_jupyter_scatter_the_map_is_a_picture_with_its_legend(ws, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "jscatter", None)                   # import jscatter -> ImportError
    view = _view(ws)
    assert view.scatter is None and "pip install" in view.line()
    fig = view.picture()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["object recognition"]
    assert view.select([ws.ids[2]]).image_ids == [ws.ids[2]]            # selecting by ids still works
