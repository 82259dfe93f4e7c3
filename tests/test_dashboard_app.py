"""The dashboard's pages driven by streamlit.testing's AppTest on a small workspace, asserting on
the figures shown (metrics, chart specs, tables), plus empty states of a taxonomy-only workspace."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from workbench.taxonomy.model import Taxonomy

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)


def _generator():
    import sys

    if "make_paper_scale_workspace" in sys.modules:
        return sys.modules["make_paper_scale_workspace"]
    spec = importlib.util.spec_from_file_location("make_paper_scale_workspace",
                                                  REPO / "benchmarks" / "make_paper_scale_workspace.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod   # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    gen = _generator()
    root = tmp_path_factory.mktemp("dash") / "ws"
    summary = gen.build(root, gen.SMALL, log=lambda *a: None)
    return root, summary


@pytest.fixture(scope="module")
def taxonomy_only(tmp_path_factory):
    from workbench.core.workspace import Workspace
    from workbench.taxonomy.io import load_seed

    root = tmp_path_factory.mktemp("dash_empty") / "ws"
    with Workspace.init(root) as w:
        load_seed(Taxonomy.of(w))
    return root


def run(root, page, state=None, widgets=None):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.query_params["page"] = page
    os.environ["WORKBENCH_WORKSPACE"] = str(root)
    for k, v in (state or {}).items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def vega(at, i=0) -> tuple[dict, pd.DataFrame]:
    """The i-th Vega-Lite chart in the main area: its spec and its data (the first dataset)."""
    import pyarrow as pa

    el = at.main.get("vega_lite_chart")[i]
    raw = el.proto.data.data or el.proto.datasets[0].data.data
    return json.loads(el.proto.spec), pa.ipc.open_stream(raw).read_pandas()


def metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def spec(at, i=0) -> dict:
    assert not at.exception, [(e.value, e.stack_trace[-6:]) for e in at.exception]
    return json.loads(at.main.get("plotly_chart")[i].proto.spec)


def db(root):
    from workbench.core.store import Store

    return Store(Path(root) / "workbench.sqlite")


def test_overview_counts_funnel_and_usage(small):
    root, s = small
    at = run(root, "overview")
    m = metrics(at)
    assert m["task types"] == f"{s['task_types']:,}"
    assert m["images"] == f"{s['images']:,}"
    assert m["samples (ok)"] == f"{s['samples']:,}"
    assert m["votes"] == f"{s['votes']:,}"
    _, funnel = vega(at)
    counts = funnel["count"].tolist()
    store = db(root)
    assert counts[0] == s["images"]
    assert counts[3] == s["samples"]
    assert counts[5] == store.scalar("SELECT count(*) FROM selections WHERE selected=1")
    assert not at.main.get("plotly_chart")   # a Vega-Lite chart: no Plotly for the browser to load
    usage = at.main.dataframe[0].value
    assert set(usage["stage"]) == {"expand", "filter", "qa"}
    assert usage["calls"].sum() == s["llm_calls"]
    assert m["prompt tokens"] == f"{store.scalar('SELECT sum(prompt_tokens) FROM llm_calls'):,}"
    runs = at.main.dataframe[1].value
    assert len(runs) == store.scalar("SELECT count(*) FROM stage_runs")


def test_coverage_chart_kinds_drill_down_search(small):
    root, s = small
    at = run(root, "coverage")
    assert not at.exception, [(e.value, e.stack_trace[-6:]) for e in at.exception]
    # Default: an icicle, two levels (3 + 3*2 nodes), sized by task types; no Plotly on the page.
    assert not at.main.get("plotly_chart")
    sp, ice = vega(at)
    assert sp["layer"][0]["mark"]["type"] == "rect"
    top = ice[ice["depth"] == 0]
    assert len(top) == 3 and len(ice) == 9   # first-level categories and their children
    assert top["task_types"].sum() == s["task_types"]
    assert top["y0"].min() == 0 and top["y1"].max() == pytest.approx(1)
    assert metrics(at)["task types"] == f"{s['task_types']}"

    # The sunburst draws the same partition as arcs; the treemap nests rectangles in its canvas.
    at.selectbox(key="cov_kind").set_value("sunburst").run()
    sp, sun = vega(at)
    assert sp["layer"][0]["mark"]["type"] == "arc"
    assert sun[["id", "y0", "y1", "depth"]].equals(ice[["id", "y0", "y1", "depth"]])
    at.selectbox(key="cov_kind").set_value("treemap").run()
    sp, tm = vega(at)
    area = (tm["x1"] - tm["x0"]) * (tm["y1"] - tm["y0"])
    from workbench.apps.dashboard.screens.coverage import CHART_PX, TREEMAP_W
    assert area[tm["depth"] == 0].sum() == pytest.approx(TREEMAP_W * CHART_PX)
    assert set(tm["id"]) == set(ice["id"])

    at.selectbox(key="cov_size").set_value("samples").run()
    _, tm = vega(at)
    store = db(root)
    assert tm.loc[tm["depth"] == 0, "samples"].sum() == s["samples"]

    # Drill into the first category: the chart's top is that node.
    first = top["id"].iloc[0]
    at.selectbox(key="cov_drill").set_value(first).run()
    _, tm = vega(at)
    assert tm.loc[tm["depth"] == 0, "id"].tolist() == [first]
    assert all(store.scalar("WITH RECURSIVE up(id, p) AS (SELECT id, parent_id FROM nodes WHERE id=? UNION ALL "
                            "SELECT n.id, n.parent_id FROM nodes n JOIN up ON n.id = up.p) "
                            "SELECT count(*) FROM up WHERE id=?", (i, first)) for i in tm["id"])
    # The icicle shows the same focus: the category spans the whole height, sized by samples.
    at.selectbox(key="cov_kind").set_value("icicle").run()
    _, ice = vega(at)
    assert ice.loc[ice["depth"] == 0, "id"].tolist() == [first]
    assert ice.loc[ice["depth"] == 1, "samples"].sum() == ice.loc[ice["depth"] == 0, "samples"].iloc[0]
    at.button(key="cov_home").click().run()
    assert (vega(at)[1]["depth"] == 0).sum() == 3

    # Search finds a node by part of its path and focuses it.
    leaf_id, leaf_name = store.one("SELECT id, name FROM nodes WHERE level=4 LIMIT 1")
    at.text_input(key="cov_search").input(leaf_name).run()
    at.selectbox(key="cov_hit").set_value(leaf_id).run()
    assert vega(at)[1]["id"].tolist() == [leaf_id]


def test_coverage_icicle_click_focuses_and_goes_up(small):
    from workbench.apps.dashboard.data import node_table
    from workbench.apps.dashboard.screens.coverage import focus_after_click

    root, _ = small
    frame = node_table(str(root))
    cat = frame[frame["parent_id"].isna()].iloc[0]
    child = frame[(frame["parent_id"] == cat["id"]) & ~frame["is_leaf"]].iloc[0]
    leaf = frame[frame["is_leaf"] & (frame["category"] == cat["name"])].iloc[0]
    assert focus_after_click(frame, "", cat["id"]) == cat["id"]            # an inner node: focus on it
    assert focus_after_click(frame, cat["id"], child["id"]) == child["id"]
    assert focus_after_click(frame, child["id"], child["id"]) == cat["id"]  # the focus itself: up a level
    assert focus_after_click(frame, cat["id"], cat["id"]) == ""            # ... to the top
    assert focus_after_click(frame, cat["id"], leaf["id"]) == cat["id"]    # a task type: stays
    assert focus_after_click(frame, cat["id"], f"__more__{cat['id']}") == cat["id"]   # a folded band: stays


def _values(trace):
    v = trace["values"]
    if isinstance(v, dict):  # plotly ships numpy arrays as typed arrays (base64)
        import base64
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return v


def test_coverage_node_table_shows_the_first_rows_and_all_on_request(small, monkeypatch):
    root, _ = small
    from workbench.apps.dashboard.screens import coverage as page_coverage

    monkeypatch.setattr(page_coverage, "ROWS_SHOWN", {"3": 3, "all": 0})
    at = run(root, "coverage", {"cov_section": "Node table"})
    n = db(root).scalar("SELECT count(*) FROM nodes")
    assert len(at.main.dataframe[0].value) == 3
    assert any(f"{n:,} node(s) — the first 3 shown" in c.value for c in at.caption)
    at.selectbox(key="tbl_rows").set_value("all").run()
    assert len(at.main.dataframe[0].value) == n
    assert not any("shown" in c.value for c in at.caption)


def test_coverage_node_table_and_quality(small):
    root, s = small
    store = db(root)
    at = run(root, "coverage", {"cov_section": "Node table"})
    assert len(at.main.dataframe[0].value) == store.scalar("SELECT count(*) FROM nodes")
    at.selectbox(key="tbl_only").set_value("task types without samples").run()
    no_samples = store.scalar("SELECT count(*) FROM nodes n WHERE level=4 AND NOT EXISTS "
                              "(SELECT 1 FROM samples s WHERE s.node_id=n.id AND s.status='ok')")
    assert len(at.main.dataframe[0].value) == no_samples
    assert metrics(at)["task types without samples"] == str(no_samples)

    at.selectbox(key="tbl_only").set_value("all nodes").run()
    at.text_input(key="tbl_text").input("~").run()   # any path below the top level
    below_top = store.scalar("SELECT count(*) FROM nodes WHERE parent_id IS NOT NULL")
    assert len(at.main.dataframe[0].value) == below_top

    at = run(root, "coverage", {"cov_section": "Quality"})
    m = metrics(at)
    assert m["max depth"] == "4" and m["context length"] == "77"
    long_paths = int(m["task paths over the context"])
    if long_paths:
        assert len(at.main.dataframe[1].value) == long_paths


def test_coverage_duplicates_section(small):
    root, _ = small
    at = run(root, "coverage", {"cov_section": "Duplicates"})
    try:
        import workbench.analysis.duplicates  # noqa: F401
    except ImportError:
        assert "taxonomy duplicates" in at.info[0].value
        return
    at.checkbox(key="dup_embed").uncheck().run()
    at.button(key="dup_go").click().run()
    assert not at.exception
    assert any("suggestion(s)" in c.value for c in at.caption)


def test_images_per_task_histogram_and_bin_list(small):
    root, s = small
    at = run(root, "images")
    sp, bars = vega(at)
    assert sp["layer"][0]["mark"]["type"] == "bar" and not at.main.get("plotly_chart")
    # The paper's bins as names in their own order (a numeric axis would collapse "0", "1–10", … onto bin 0).
    assert sp["encoding"]["x"]["type"] == "nominal"
    assert sp["encoding"]["x"]["sort"][:2] == ["0", "1–10"] and list(bars["bin"][:2]) == ["0", "1–10"]
    assert bars["task_types"].sum() == s["task_types"]
    assert metrics(at)["total samples"] == f"{s['samples']:,}"
    at.selectbox(key="ipt_bin").set_value("1–10").run()
    listed = at.main.dataframe[0].value
    assert len(listed) == dict(zip(bars["bin"], bars["task_types"]))["1–10"]
    assert listed["samples"].between(1, 10).all()
    # Per category: bars stacked by first-level category, one colour each.
    at.checkbox(key="ipt_stack").check().run()
    sp, stacked = vega(at)
    assert sp["encoding"]["color"]["field"] == "category" and stacked["category"].nunique() == 3
    assert stacked["task_types"].sum() == s["task_types"]
    # A chosen bar (a chart selection, as the browser reports it) picks the bin.
    at = run(root, "images", {"ipt_hist": {"selection": {"pick": [{"bin": "0"}]}}})
    zero = db(root).scalar("SELECT count(*) FROM nodes n WHERE level=4 AND NOT EXISTS "
                           "(SELECT 1 FROM samples s WHERE s.node_id=n.id AND s.status='ok')")
    assert len(at.main.dataframe[0].value) == zero


def map_points(at) -> pd.DataFrame:
    """The map's drawn points, from its Plotly traces: x, y, kind (image | task), group (the trace's name)."""
    rows = [pd.DataFrame({"x": _values({"values": t["x"]}), "y": _values({"values": t["y"]}),
                          "kind": "task" if t["legendgroup"] == "tasks" else "image", "group": t["name"]})
            for t in spec(at)["data"] if t.get("legendgroup") in ("tasks", "images")]
    return pd.concat(rows, ignore_index=True)


def _lasso(x0, x1, y0, y1) -> dict:
    """A lasso as the browser reports it (data units), around the rectangle, drawn as a pentagon."""
    return {"x": [x0, x1, x1, (x0 + x1) / 2, x0], "y": [y0, y0, y1, y1 + (y1 - y0), y1]}


def test_embedding_map_points_colours_and_selection(small):
    """One view: Plotly's WebGL scatter over the server's picture of every point (no Vega-Lite canvas, no view
    switch); a lasso selects every point in it, as reported in data units."""
    root, s = small
    at = run(root, "map")
    assert not at.main.get("vega_lite_chart") and not at.get("radio")
    sp = spec(at)
    assert {t["type"] for t in sp["data"]} == {"scattergl"} and sp["layout"]["dragmode"] == "lasso"
    (image,) = sp["layout"]["images"]
    assert image["source"].startswith("data:image/png;base64,") and image["layer"] == "below"
    assert sp["layout"]["xaxis"]["range"] == [image["x"], image["x"] + image["sizex"]]   # the picture fills the plot
    assert sp["layout"]["yaxis"]["range"] == [image["y"] - image["sizey"], image["y"]]
    assert len(at.sidebar.get("plotly_chart")) == 1   # Plotly's code asked for before the page ran (the shell)
    pts = map_points(at)
    assert (pts["kind"] == "image").sum() == s["images"] and (pts["kind"] == "task").sum() == s["task_types"]
    assert pts["group"].nunique() == 3   # one colour per first-level category
    legend = at.main.html[0].proto.body
    assert all(g in legend for g in pts["group"].unique())
    at.selectbox(key="map_colour").set_value("source").run()
    pts = map_points(at)
    groups = set(pts["group"])
    assert "task type" in groups and groups <= set(_generator().SOURCES) | {"task type"}
    assert set(pts.loc[pts["kind"] == "task", "group"]) == {"task type"}
    # A lasso (its path in data units, as the browser reports it) shows every point inside it: its images with
    # their matches and Q&A, its task types as a table.
    x0, x1 = float(pts["x"].min()) - 1, float(pts["x"].median())
    y0, y1 = float(pts["y"].min()) - 1, float(pts["y"].max()) + 1
    inside = pts[(pts["x"] >= x0) & (pts["x"] <= x1)]
    n_img, n_task = int((inside["kind"] == "image").sum()), int((inside["kind"] == "task").sum())
    assert 0 < n_img < s["images"]
    lasso = {"points": [], "box": [], "lasso": [_lasso(x0, x1, y0, y1)]}
    at = run(root, "map", {"map_colour": "source", "map_chart": {"selection": lasso}})
    assert any(f"Selection: {n_img} image(s), {n_task} task type(s)" in h.value for h in at.subheader)
    assert len(at.get("imgs")) >= 1 or len(at.get("image")) >= 1, at.main
    assert any("**Q:**" in md.value for md in at.markdown)
    if n_task:
        assert len(at.main.dataframe[0].value) == n_task
    # The box tool's selection counts the same way; a box over empty space says so.
    box = {"points": [], "lasso": [], "box": [{"x": [x1, x0], "y": [y0, y1]}]}
    at = run(root, "map", {"map_chart": {"selection": box}})
    assert any(f"Selection: {n_img} image(s), {n_task} task type(s)" in h.value for h in at.subheader)
    empty = {"points": [], "lasso": [], "box": [{"x": [x1 + 1e6, x1 + 2e6], "y": [y0, y1]}]}
    at = run(root, "map", {"map_chart": {"selection": empty}})
    assert not at.subheader and any("No points in the selection" in c.value for c in at.caption)


def test_embedding_map_lasso_selects_points_the_sample_left_out(small, monkeypatch):
    """A large map's scatter is a sample, the picture under it every point: the legend counts every point and a
    lasso selects every point inside it, drawn or not."""
    root, s = small
    from workbench.apps.dashboard import map_figures

    monkeypatch.setattr(map_figures, "POINT_CHOICES", {"10": 10, "all": 0})
    monkeypatch.setattr(map_figures, "DEFAULT_POINTS", "10")
    monkeypatch.setattr(map_figures, "HOVER_ALL_UP_TO", 0)   # the small workspace counts as large
    at = run(root, "map")
    pts = map_points(at)
    n = s["images"] + s["task_types"]
    assert len(pts) == 10 < n
    assert any("a fixed random sample of 10 of" in c.value for c in at.caption)
    assert spec(at)["data"] == spec(run(root, "map"))["data"]   # the same sample on every rerun
    legend = at.main.html[0].proto.body   # counts per group, over every point
    assert sum(int(m.split(" · ")[0]) for m in _legend_counts(legend)) == s["images"]
    big = {"points": [], "box": [], "lasso": [_lasso(-1e6, 1e6, -1e6, 1e6)]}
    at = run(root, "map", {"map_chart": {"selection": big}})
    assert any(f"Selection: {s['images']} image(s), {s['task_types']} task type(s)" in h.value for h in at.subheader)


def _legend_counts(legend: str) -> list[str]:
    """'images · task types' of each legend row."""
    import re

    return re.findall(r"<span style='color:#888'> ([0-9,]+ · [0-9,]+)</span>", legend)


def test_embedding_map_selection_proposes_a_task_type(small, tmp_path):
    """Clicked points of the drawn sample (curve and point index, as the browser reports them) are a selection too;
    the selection is an action: its ids exported, a task type proposed for its images with a note naming them (on a
    copy of the workspace, which the other tests share)."""
    root, s = small
    at = run(root, "map", {"map_colour": "source"})
    traces = spec(at)["data"]
    curve = next(i for i, t in enumerate(traces) if t["name"] != "task type")
    clicked = {"map_colour": "source", "map_chart": {"selection": {"box": [], "lasso": [], "points": [
        {"curve_number": curve, "point_index": 0}, {"curve_number": curve, "point_index": 1}]}}}
    at = run(root, "map", clicked)
    assert any("Selection: 2 image(s)" in h.value for h in at.subheader)
    assert any("**Q:**" in md.value for md in at.markdown)
    root = shutil.copytree(root, tmp_path / "ws")
    at = run(root, "map", clicked)
    assert at.get("download_button") and at.text_input(key="gaps_drill_add_map_name").value == ""
    assert any("[Review](?page=review)" in c.value for c in at.caption)
    at.text_input(key="gaps_drill_add_map_name").set_value("lassoed on the map")
    at.button(key="gaps_drill_add_map_add").click().run()
    assert any("lassoed on the map (proposed)" in m.value for m in at.success), [e.value for e in at.error]
    row = db(root).one("SELECT status, origin, note FROM nodes WHERE name = 'lassoed on the map'")
    assert (row["status"], row["origin"]) == ("proposed", "manual")
    assert row["note"].startswith("gap (map selection): 2 image(s)")


def test_embedding_map_compute_button_stores_projection(tmp_path):
    gen = _generator()
    root = tmp_path / "ws"
    gen.build(root, gen.SMALL, log=lambda *a: None)
    at = run(root, "map")
    at.selectbox(key="map_method").set_value("pca").run()
    assert "No stored PCA projection" in at.info[0].value
    at.button(key="map_compute").click().run()
    assert db(root).scalar("SELECT count(*) FROM projections WHERE method='pca'") == 1
    assert len(map_points(at)) == gen.SMALL.images + gen.SMALL.leaves   # every image and task type drawn


def test_referees_figures(small):
    root, s = small
    from workbench.analysis import agreement

    at = run(root, "referees")
    store = db(root)
    pats, names = agreement.load_patterns(store)
    m = metrics(at)
    assert m["referees"] == "3"
    assert m["Fleiss' κ"] == f"{agreement.fleiss_from_patterns(pats, names):.3f}"
    _, bars = vega(at, 0)
    for ref, rate in zip(bars["referee"], bars["pass_rate"]):
        got = store.one("SELECT avg(vote) FROM votes WHERE referee=? AND valid=1", (ref,))[0]
        assert rate == pytest.approx(got)
    heat_spec, heat = vega(at, 1)
    assert heat_spec["layer"][0]["mark"]["type"] == "rect"
    assert sorted(set(heat["a"])) == sorted(names) and len(heat) == len(names) ** 2
    assert heat.loc[heat["a"] == heat["b"], "kappa"].tolist() == pytest.approx([1.0] * len(names))
    assert not at.main.get("plotly_chart")
    per_cat = at.main.dataframe[1].value
    assert len(per_cat) == 3
    dis = store.scalar("SELECT count(*) FROM (SELECT sample_id FROM votes WHERE valid=1 GROUP BY sample_id "
                       "HAVING min(vote) <> max(vote))")
    assert any(f"{dis} disagreement(s)" in c.value for c in at.caption)
    raw = at.main.dataframe[2].value
    assert list(raw.columns[:4]) == ["referee", "vote", "valid", "raw_text"] and len(raw) == 3


def test_prompts_page_files_versions_and_trials(small):
    root, _ = small
    at = run(root, "prompts")
    files = at.main.dataframe[0].value
    from workbench.llm.prompts import DEFAULT_PROMPTS_DIR, template_hash
    bundled = sorted(DEFAULT_PROMPTS_DIR.glob("*.j2"))
    assert len(files) == len(bundled)
    for f in bundled:
        assert files.loc[files["name"] == f.name, "hash"].iloc[0] == template_hash(f.read_text(encoding="utf-8"))
    versions = at.main.dataframe[-1].value
    assert set(versions["prompt_hash"]) == {"3f6c1b2a9d8e7f01", "a1b2c3d4e5f60718"}
    assert any("No trial yet" in c.value for c in at.caption)       # trials: tests/test_trials*.py


def test_taxonomy_only_workspace_has_helpful_empty_states(taxonomy_only):
    expected = {"overview": "workbench images add", "images": "workbench qa", "map": "workbench embed",
                "referees": "workbench referee", "prompts": "workbench expand"}
    for page, command in expected.items():
        at = run(taxonomy_only, page)
        infos = " ".join(i.value for i in at.info)
        assert command in infos, (page, infos)
    at = run(taxonomy_only, "coverage")
    assert not at.exception and len(vega(at)[1]) > 0   # the seed tree drawn (sized by task types)


def test_missing_workspace_is_a_clear_error(tmp_path):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    os.environ["WORKBENCH_WORKSPACE"] = str(tmp_path / "nowhere")
    at.run()
    assert not at.exception
    assert "workbench init" in at.error[0].value


# -- new-user pass fixes (issue 12) ----------------------------------------------------------------

def test_images_stacked_by_category_keeps_every_bin_on_the_x_axis(small):
    root, _ = small
    at = run(root, "images", {"ipt_stack": True})
    sp, bars = vega(at)
    # "0" looks numeric: the stacked chart keeps the bins as names in the paper's order, not a linear axis.
    assert sp["encoding"]["x"]["type"] == "nominal" and sp["encoding"]["x"]["sort"][:2] == ["0", "1–10"]
    assert "1–10" in set(bars["bin"]) and bars["bin"].nunique() >= 2


@pytest.fixture(scope="module")
def matches_only(tmp_path_factory):
    gen = _generator()
    root = tmp_path_factory.mktemp("dash_matches") / "ws"
    gen.build(root, gen.SMALL, log=lambda *a: None)
    store = db(root)
    with store.write() as conn:
        for table in ("selections", "votes", "samples"):
            conn.execute(f"DELETE FROM {table}")
    return root


def test_images_page_defaults_to_matches_when_there_are_no_samples(matches_only):
    at = run(matches_only, "images")
    assert at.radio(key="ipt_measure").value == "images (CLIP matches)"
    assert not at.info, [i.value for i in at.info]   # not the "no samples yet" empty state
    _, bars = vega(at)
    matched = db(matches_only).scalar("SELECT count(DISTINCT node_id) FROM matches")
    assert bars["task_types"].sum() - dict(zip(bars["bin"], bars["task_types"]))["0"] == matched


def test_images_page_shows_thumbnails_of_a_chosen_task_type(small):
    root, _ = small
    from workbench.apps.dashboard.screens import images as page_images

    store = db(root)
    node, n = store.one("SELECT node_id, count(*) AS n FROM matches GROUP BY node_id ORDER BY n DESC LIMIT 1")
    at = run(root, "images", {"ipt_measure": "images (CLIP matches)"})
    assert at.selectbox(key="ipt_task").value is None
    at.selectbox(key="ipt_task").set_value(node).run()
    assert not at.exception, [e.value for e in at.exception]
    imgs = at.get("image")
    assert len(imgs) == 1
    shown = list(imgs[0].proto.imgs)
    assert len(shown) == min(n, page_images.THUMBS)
    assert all(" · " in i.caption for i in shown)   # rank · CLIP score
    assert any(f"of {n:,} matched image(s)" in c.value for c in at.caption)


@pytest.fixture(scope="module")
def leaf_grew(tmp_path_factory):
    """A workspace whose task type got a child after the embedding set (and projection) was computed."""
    from workbench.core.workspace import Workspace

    gen = _generator()
    root = tmp_path_factory.mktemp("dash_grew") / "ws"
    summary = gen.build(root, gen.SMALL, log=lambda *a: None)
    with Workspace.open(root) as ws:
        leaf = next(n for n, _ in Taxonomy.of(ws).leaves())
        Taxonomy.of(ws).add("a newer finer task", leaf)
    return root, summary, leaf.id


def test_embedding_map_legend_lists_task_types_and_skips_inner_nodes(leaf_grew):
    root, s, inner = leaf_grew
    at = run(root, "map")
    pts = map_points(at)
    tasks = pts[pts["kind"] == "task"]
    # The grown leaf is an inner node now; its child has no embedding yet: one task type fewer is drawn.
    assert len(tasks) == s["task_types"] - 1
    store = db(root)
    names = {x for t in spec(at)["data"] if t.get("legendgroup") == "tasks" for x in t["hovertext"]}
    assert store.scalar("SELECT name FROM nodes WHERE id=?", (inner,)) not in names
    # The legend beside the chart counts images and task types per colour group, over every point (Plotly's own
    # legend stopped at the plot's height).
    assert spec(at)["layout"]["showlegend"] is False
    legend = at.main.html[0].proto.body
    for group, n in tasks.groupby("group", observed=True).size().items():
        n_img = int(((pts["kind"] == "image") & (pts["group"] == group)).sum())
        assert f"{group}<span style='color:#888'> {n_img:,} · {n:,}" in legend


def test_embedding_map_legend_leaves_the_modebar_clear(small):
    root, _ = small
    from workbench.apps.dashboard import map_figures

    # The legend is HTML in its own column: nothing is drawn over the map's modebar, which has a top margin of its
    # own.
    at = run(root, "map")
    layout = spec(at)["layout"]
    assert layout["showlegend"] is False and "images · task types" in at.main.html[0].proto.body
    assert layout["margin"]["t"] >= map_figures.MODEBAR_MARGIN >= 30


def test_map_colour_by_referee_outcome_uses_the_traffic_lights(small):
    root, _ = small
    from workbench.apps.dashboard import map_figures

    legend = run(root, "map", {"map_colour": "referee outcome"}).main.html[0].proto.body
    assert "referee outcome" in legend and "passed" in legend
    for name, colour in map_figures.OUTCOME_COLOURS.items():
        if name in legend:
            assert colour in legend                                    # traffic lights, as in the scatter


def test_table_versions_are_counted_again_only_after_a_commit(tmp_path, monkeypatch):
    """The dashboard's cache keys (row count, max rowid per table) are re-counted when something commits to the
    database, from any connection — not on a timer: no count runs while nothing changes, and a delete that leaves
    max(rowid) alone is still seen."""
    import sqlite3

    from workbench.apps.dashboard import data
    from workbench.core.workspace import Workspace
    from workbench.taxonomy.io import load_seed

    root = tmp_path / "ws"
    with Workspace.init(root) as w:
        load_seed(Taxonomy.of(w))
    r = str(root)
    before = data.table_version(r, "nodes")
    counted = []
    real = data.open_workspace(r).store.one
    monkeypatch.setattr(data.open_workspace(r).store, "one", lambda *a, **k: counted.append(a) or real(*a, **k))
    assert data.table_version(r, "nodes") == before and not counted   # nothing committed: nothing counted
    other = sqlite3.connect(root / "workbench.sqlite", isolation_level=None)
    other.execute("DELETE FROM nodes WHERE rowid = (SELECT min(rowid) FROM nodes WHERE parent_id IS NOT NULL "
                  "AND id NOT IN (SELECT parent_id FROM nodes WHERE parent_id IS NOT NULL))")
    other.close()
    after = data.table_version(r, "nodes")
    assert after[0] == before[0] - 1 and after[1] == before[1] and len(counted) == 1


def test_a_persons_vote_recounts_only_people_and_flags(small, monkeypatch):
    """A vote cast on the Adjudicate page changes the overview's funnel at once, without counting every referee
    vote again (~5 s at paper scale): the referees' counts are kept per machine-vote version. A person changing
    their vote (the same row, updated) is seen too."""
    import time

    from workbench.apps.dashboard import data
    from workbench.review import adjudication as adj
    from workbench.stages.select import stage

    root = str(small[0])
    ws = data.open_workspace(root)
    counted = []
    real = stage.machine_vote_counts
    monkeypatch.setattr(stage, "machine_vote_counts", lambda store: counted.append(1) or real(store))
    data.forget_derived(root)   # nothing cached, in memory or on disk
    before = data.overview(root)
    passing = dict(before["funnel"])[data.PASSING]
    referees_v = data.version(root, "machine_votes")
    oc = data.outcomes_frame(root, data.version(root, *data.OUTCOME_TABLES), ws.config.select.min_votes)
    sid = oc.loc[oc["refereed"] & ~oc["passed"], "sample_id"].iloc[0]
    try:
        adj.vote(ws, sid, 1, "tester")
        after = data.overview(root)
        assert dict(after["funnel"])[data.PASSING] == passing + 1
        assert after["counts"]["human votes"] == before["counts"]["human votes"] + 1
        assert after["counts"]["votes"] == before["counts"]["votes"]
        assert data.version(root, "machine_votes") == referees_v   # the Referees page's figures stay cached
        time.sleep(0.01)
        adj.vote(ws, sid, 0, "tester")   # changed their mind: an update in place
        assert dict(data.overview(root)["funnel"])[data.PASSING] == passing
        assert counted == [1]   # the referees' votes were counted once
    finally:
        adj.unvote(ws, sid, "tester")


def test_referee_vote_counts_are_kept_on_disk_for_a_restart(small, monkeypatch):
    """A restarted dashboard reads the per-sample machine vote counts from disk (counting them is most of a cold
    start at paper scale); "Reload data" forgets them."""
    from workbench.apps.dashboard import data
    from workbench.stages.select import stage

    root = str(small[0])
    folder = Path(root) / "arrays" / "dashboard"
    data.forget_derived(root)
    v = data.version(root, "machine_votes", "samples")
    first = data.machine_vote_counts(root, v)
    assert len(list(folder.glob("machine-votes-*.parquet"))) == 1
    data.machine_vote_counts.clear()   # as a new server process

    def not_again(store):
        raise AssertionError("counted again")
    monkeypatch.setattr(stage, "machine_vote_counts", not_again)
    again = data.machine_vote_counts(root, v)
    pd.testing.assert_frame_equal(again, first)
    data.forget_derived(root)
    assert not list(folder.glob("machine-votes-*.parquet"))


def test_the_paper_scale_generator_leaves_proposals_pending_for_the_review_page(small, tmp_path):
    """The benchmark workspace has a last expand run's proposals pending (the Review page is timed with work to
    show); its other figures are those of a workspace without them."""
    import dataclasses

    gen = _generator()
    root = tmp_path / "ws"
    got = gen.build(root, dataclasses.replace(gen.SMALL, proposals=8), log=lambda *a: None)
    _, plain = small
    skip = {"proposals", "projection", "seconds"}
    assert {k: v for k, v in got.items() if k not in skip} == {k: v for k, v in plain.items() if k not in skip}
    assert got["proposals"] == 8 and plain["proposals"] == 0
    m = metrics(run(root, "review"))
    assert m["pending proposals"] == "8" and m["stage runs"] == "1"
    assert db(root).scalar("SELECT count(DISTINCT parent_id) FROM nodes WHERE status='proposed'") == 2
