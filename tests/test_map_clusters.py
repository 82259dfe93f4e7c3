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


def test_cluster_layer_draws_members_and_exemplars(clustered):
    """The map (Plotly over the picture) draws the layer as traces of its own, and the picture under it with the
    layer too."""
    root, ids = clustered
    at = run(root)
    plain = traces(at)
    assert not any(t["name"].startswith("#") for t in plain)   # off unless asked
    plain_picture = json.loads(at.main.get("plotly_chart")[0].proto.spec)["layout"]["images"][0]["source"]
    at = run(root, params={"layer": "clusters"})
    assert at.toggle(key="map_clusters").value is True
    layer = [t for t in traces(at) if t["name"].startswith("#")]
    by = {(t["name"], t["marker"]["symbol"]): len(_values({"values": t["x"]})) for t in layer}
    assert by == {("#1 counting sheep", "circle-open"): 5, ("#1 counting sheep", "star"): 2,
                  ("#2 (unnamed)", "circle-open"): 2, ("#2 (unnamed)", "star"): 2}
    assert sum(t.get("showlegend", True) for t in layer) == 2   # one legend entry per cluster
    assert any("#1 counting sheep (5 of 5 images on the map, proposed)" in c.value for c in at.caption)
    picture = json.loads(at.main.get("plotly_chart")[0].proto.spec)["layout"]["images"][0]["source"]
    assert picture != plain_picture   # the picture under it: faded, with rings
    legend = at.main.html[0].proto.body
    assert "discovered clusters" in legend and "#1 counting sheep<span style='color:#888'> 5 · 0" in legend
    assert "#2 (unnamed)<span style='color:#888'> 2 · 0" in legend
    # Selecting the first cluster's ring trace shows its images; so does a box around its rings.
    curve = next(i for i, t in enumerate(traces(at)) if t["name"] == "#1 counting sheep")
    at = run(root, {"map_clusters": True, "map_chart": {"selection": {"points": [
        {"curve_number": curve, "point_index": i} for i in range(5)]}}})
    assert any("Selection: 5 image(s)" in h.value for h in at.subheader)
    ring = next(t for t in layer if t["name"] == "#1 counting sheep" and t["marker"]["symbol"] == "circle-open")
    xs, ys = _values({"values": ring["x"]}), _values({"values": ring["y"]})
    box = {"x": [min(xs) - 1e-3, max(xs) + 1e-3], "y": [min(ys) - 1e-3, max(ys) + 1e-3]}
    at = run(root, {"map_clusters": True, "map_chart": {"selection": {"points": [], "box": [box], "lasso": []}}})
    assert any(h.value.startswith("Selection: ") and int(h.value.split()[1]) >= 5 for h in at.subheader)
