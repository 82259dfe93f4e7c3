"""The discovered clusters as a layer on the embedding map: rings per cluster, stars for its exemplars, one legend
entry each, opened from the Gaps page's link (?layer=clusters), and selectable like any other point."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest
from tests.test_dashboard_app import REPO, _generator, _values

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    from workbench.core.store import Store

    gen = _generator()
    root = tmp_path_factory.mktemp("map_clusters") / "ws"
    gen.build(root, gen.SMALL, log=lambda *a: None)
    store = Store(root / "workbench.sqlite")
    ids = [r[0] for r in store.query("SELECT id FROM images ORDER BY id LIMIT 7")]
    with store.write() as c:
        for key, members, name in (("k1", ids[:5], "counting sheep"), ("k2", ids[5:7], None)):
            c.execute("INSERT INTO discoveries(cluster, cluster_key, size, cohesion, image_ids, exemplar_ids, "
                      "nearest, name, status, created_at) VALUES (0, ?, ?, 0.8, ?, ?, '[]', ?, ?, 't')",
                      (key, len(members), json.dumps(members), json.dumps(members[:2]), name,
                       "proposed" if name else "unreadable"))
    store.close()
    return root, ids


def run(root, state=None, params=None):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.query_params["page"] = "map"
    for k, v in (params or {}).items():
        at.query_params[k] = v
    os.environ["WORKBENCH_WORKSPACE"] = str(root)
    for k, v in (state or {}).items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def traces(at):
    return json.loads(at.main.get("plotly_chart")[0].proto.spec)["data"]


def canvas(at):
    """The interactive view's spec and data."""
    import pyarrow as pa

    el = at.main.get("vega_lite_chart")[0]
    raw = el.proto.data.data or el.proto.datasets[0].data.data
    return json.loads(el.proto.spec), pa.ipc.open_stream(raw).read_pandas()


def test_interactive_view_draws_rings_and_stars_over_faded_points(clustered):
    root, ids = clustered
    sp, pts = canvas(run(root))
    assert set(pts["kind"]) == {"image", "task"} and "layer" not in sp   # off unless asked: one plain view
    at = run(root, params={"layer": "clusters"})
    assert at.toggle(key="map_clusters").value is True
    sp, pts = canvas(at)
    layer = pts[pts["kind"].isin(["ring", "star"])]
    assert layer.groupby(["group", "kind"], observed=True).size().to_dict() == {
        ("#1 counting sheep", "ring"): 5, ("#1 counting sheep", "star"): 2,
        ("#2 (unnamed)", "ring"): 2, ("#2 (unnamed)", "star"): 2}
    # Three layers: the points (faded), the rings (open), the exemplars (stars); one colour scale for all.
    filters = [lay["transform"][0]["filter"] for lay in sp["layer"]]
    assert "'ring'" in filters[1] and "'star'" in filters[2]
    assert sp["layer"][0]["encoding"]["opacity"]["scale"]["range"][0] < 0.5
    assert sp["layer"][1]["mark"]["filled"] is False
    assert {"#1 counting sheep", "#2 (unnamed)"} <= set(sp["layer"][0]["encoding"]["color"]["scale"]["domain"])
    legend = at.main.html[0].proto.body
    assert "discovered clusters" in legend and "#1 counting sheep<span style='color:#888'> 5 · 0" in legend
    # A box around the first cluster's rings selects its images (and whatever else lies inside).
    rings = layer[(layer["group"] == "#1 counting sheep") & (layer["kind"] == "ring")]
    box = {"x": [float(rings["x"].min()), float(rings["x"].max())],
           "y": [float(rings["y"].min()), float(rings["y"].max())]}
    inside = pts[(pts["kind"] != "ring") & (pts["kind"] != "star") & pts["x"].between(*box["x"])
                 & pts["y"].between(*box["y"])]
    at = run(root, {"map_clusters": True, "map_canvas": {"selection": {"box": box}}})
    n_img = int((inside["kind"] == "image").sum())
    assert n_img >= 5 and any(f"Selection: {n_img} image(s)" in h.value for h in at.subheader)


def test_cluster_layer_draws_members_and_exemplars(clustered):
    """The lasso view (Plotly) draws the layer as traces of its own."""
    root, ids = clustered
    plain = traces(run(root, params={"view": "lasso"}))
    assert not any(t["name"].startswith("#") for t in plain)   # off unless asked
    at = run(root, params={"layer": "clusters", "view": "lasso"})
    assert at.toggle(key="map_clusters").value is True
    layer = [t for t in traces(at) if t["name"].startswith("#")]
    by = {(t["name"], t["marker"]["symbol"]): len(_values({"values": t["x"]})) for t in layer}
    assert by == {("#1 counting sheep", "circle-open"): 5, ("#1 counting sheep", "star"): 2,
                  ("#2 (unnamed)", "circle-open"): 2, ("#2 (unnamed)", "star"): 2}
    assert sum(t.get("showlegend", True) for t in layer) == 2   # one legend entry per cluster
    assert any("#1 counting sheep (5 of 5 images on the map, proposed)" in c.value for c in at.caption)
    # Selecting the first cluster's ring trace shows its images.
    curve = next(i for i, t in enumerate(traces(at)) if t["name"] == "#1 counting sheep")
    at = run(root, {"map_clusters": True, "map_view": "lasso", "map_chart": {"selection": {"points": [
        {"curve_number": curve, "point_index": i} for i in range(5)]}}})
    assert any("Selection: 5 image(s)" in h.value for h in at.subheader)


def test_cluster_layer_on_the_picture_lists_each_cluster(clustered, monkeypatch):
    """The picture view (a large map) draws the layer too: the map faded, rings per cluster, and a legend of the
    clusters with the images each has on the map."""
    root, _ = clustered
    from workbench.apps.dashboard.screens import map as page_map

    monkeypatch.setattr(page_map, "PICTURE_ABOVE", 0)
    at = run(root, params={"layer": "clusters"})
    assert at.radio(key="map_view").value == "picture" and len(at.main.image) == 1
    legend = at.main.html[0].proto.body
    assert "discovered clusters" in legend
    assert "#1 counting sheep<span style='color:#888'> 5 · 0" in legend
    assert "#2 (unnamed)<span style='color:#888'> 2 · 0" in legend
    plain = run(root, params={"view": "picture"}).main.html[0].proto.body
    assert "#1 counting sheep" not in plain
