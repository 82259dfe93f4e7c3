"""Bottom-up discovery on synthetic embeddings: families of task types removed from the taxonomy are found
again from their images (clustered, named by the scripted VLM server), pure noise proposes nothing, and after
accepting a discovered node the incremental re-match gives it the previously unfit images."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from clip_fixtures import make_images, use_tiny_clip
from conftest import run_cli
from openai_server import OpenAIServer, Reply
from workbench.analysis.discovery import candidates, discover, discovery_report
from workbench.core.workspace import Workspace
from workbench.stages.embed import stage as E
from workbench.stages.match.stage import match
from workbench.taxonomy.model import Taxonomy

pytestmark = pytest.mark.timeout(120)

D, FAMILIES, REMOVED, PER_FAMILY, NOISE, AREAS = 96, 10, (1, 5, 6, 8), 20, 40, 3


def _unit(a):
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def _write_set(ws, kind: str, ids: list[str], hashes: list, arr: np.ndarray) -> None:
    key = E.text_set_key(ws) if kind == "text" else E.image_set_key(ws)
    E._ensure_set(ws, key, kind, arr.shape[1], ws.config.clip.template if kind == "text" else None)
    store = E._prepare(ws, key)
    E._commit_batch(ws, key, store, ids, hashes, [False] * len(ids), arr)


def _text_rows(ws, vec_of: dict[str, np.ndarray]) -> None:
    """Text embeddings for the given node ids, with the hashes the embed stage would store."""
    items = {n: h for n, _, h in E.current_task_texts(ws)}
    ids = [n for n in vec_of if n in items]
    _write_set(ws, "text", ids, [items[n] for n in ids], np.stack([vec_of[n] for n in ids]))


@pytest.fixture
def world(tmp_path):
    """10 families of task types with image clusters; REMOVED families have images but no task types;
    NOISE images point anywhere. Returns (ws, family of each image id (-1 noise), family directions)."""
    rng = np.random.default_rng(3)
    ws = Workspace.init(tmp_path / "ws")
    use_tiny_clip(ws)
    centres = _unit(rng.normal(size=(FAMILIES, D)))
    areas = [Taxonomy.of(ws).add(f"Area {a}", origin="seed") for a in range(AREAS)]
    text = {}
    for f in range(FAMILIES):
        if f in REMOVED:
            continue
        for j in range(3):
            node = Taxonomy.of(ws).add(f"Family {f} task {j}", areas[f % AREAS].id, origin="seed")
            text[node.id] = _unit(centres[f] + rng.normal(scale=0.08, size=D))
    _text_rows(ws, text)
    n = FAMILIES * PER_FAMILY + NOISE
    files = make_images(tmp_path / "imgs", n, size=(24, 20))
    ws.reload_config()
    from workbench.stages.images.register import register_images

    register_images(ws, files, root=tmp_path / "imgs", workers=1)
    by_path = {r["path"]: r["id"] for r in ws.store.query("SELECT id, path FROM images")}
    ids = [by_path[p.name] for p in files]
    fam = np.r_[np.repeat(np.arange(FAMILIES), PER_FAMILY), -np.ones(NOISE, int)]
    vecs = np.where(fam[:, None] >= 0, centres[np.maximum(fam, 0)], 0) + rng.normal(scale=0.09, size=(n, D))
    vecs[fam < 0] = rng.normal(size=(NOISE, D))
    _write_set(ws, "image", ids, [None] * n, _unit(vecs))
    match(ws, 3, embed=False)
    family = dict(zip(ids, fam.tolist()))
    # The filter rejected every candidate of a few images of one removed family: the strongest signal.
    with ws.store.write() as c:
        for i in [i for i in ids if family[i] == REMOVED[0]][:5]:
            c.execute("INSERT INTO filter_decisions(image_id, node_id, label, kept, reason) "
                      "SELECT image_id, node_id, node_id, 0, 'not chosen' FROM matches WHERE image_id=?", (i,))
    yield ws, family, centres
    ws.close()


def naming_script(ws, family: dict, calls: list):
    """The scripted VLM names a cluster after the majority family of its exemplar images."""
    from workbench.stages.vision import image_data_url

    fam_of_url = {image_data_url(ws, i): f for i, f in family.items()}

    def script(req):
        fams = [fam_of_url[u] for u in req.images]
        calls.append(fams)
        f = max(set(fams), key=fams.count)
        parent = re.search(r"parents \(the first is suggested\):\s*\n- (.+)", req.text).group(1).strip()
        return Reply(json.dumps({"name": f"Found family {f}", "parent": parent, "reason": "scripted"}))
    return script


def _majority(image_ids, family):
    fams = [family[i] for i in image_ids]
    return max(set(fams), key=fams.count)


def test_removed_families_are_rediscovered_and_the_loop_closes(world, monkeypatch):
    ws, family, centres = world
    why = candidates(ws, threshold=0.4)
    assert sum(v == "filter_rejected" for v in why.values()) == 5
    calls: list = []
    with OpenAIServer(naming_script(ws, family, calls)) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        dry = discover(ws, min_cluster_size=8, threshold=0.4, dry_run=True)
        assert dry.clusters and not calls and not dry.proposals
        assert ws.store.scalar("SELECT count(*) FROM nodes WHERE origin='discovered'") == 0
        res = discover(ws, min_cluster_size=8, threshold=0.4)
    found = {_majority(c.image_ids, family) for c in res.clusters}
    assert -1 not in found, "a cluster of pure noise was proposed"
    assert not found - set(REMOVED), "a family the taxonomy has was proposed"
    recall = len(found & set(REMOVED)) / len(REMOVED)
    assert recall >= 0.9, (recall, found)
    assert len(calls) == len(res.clusters) and all(len(c) == 6 for c in calls)
    rows = ws.store.query("SELECT * FROM discoveries WHERE status='proposed'")
    assert len(rows) == len(res.clusters)
    nodes = {n.id: n for n in Taxonomy.of(ws).nodes()}
    for r in rows:
        node = nodes[r["node_id"]]
        assert node.origin == "discovered" and node.status == "proposed" and node.prompt_hash == r["prompt_hash"]
        assert r["raw"] and json.loads(r["raw"])["name"] == node.name and r["model"]
        assert set(json.loads(r["exemplar_ids"])) <= set(json.loads(r["image_ids"]))
        assert json.loads(r["nearest"])[0]["score"] < 0.4
    # Not matched yet: the report says so. Accept, give the new task types text embeddings (a CLIP that knows
    # them: their family's direction), re-match incrementally, and count the unfit images they now take.
    assert all(not r["matched"] for r in discovery_report(ws))
    Taxonomy.of(ws).accept([r["node_id"] for r in rows])
    fam_of_node = {r["node_id"]: _majority(json.loads(r["image_ids"]), family) for r in rows}
    _text_rows(ws, {n: centres[f] for n, f in fam_of_node.items()})
    rep = match(ws, 3, embed=False)
    assert rep.recomputed == 0 and rep.new_targets == len(rows)     # incremental, not a full re-match
    report = discovery_report(ws)
    assert all(r["matched"] and r["node_status"] == "accepted" for r in report)
    taken = sum(r["top1"] for r in report) / sum(r["images"] for r in report)
    assert taken >= 0.9, report
    print(f"\ndiscovery: recall of removed families {recall:.2f} ({len(found & set(REMOVED))}/{len(REMOVED)}); "
          f"after accepting, the discovered nodes take {taken:.2f} of their previously unfit images as best match")
    out = run_cli("discover", ws.root, "--report")
    assert out.code == 0 and "now takes" in out.out, out.err


@pytest.mark.parametrize("family", [False, True], ids=["pure-noise", "one-missing-family"])
def test_pure_noise_proposes_nothing_and_a_lone_family_is_found(tmp_path, monkeypatch, family):
    """Only noise is unfit: no cluster, no call. Only one family is unfit (every candidate is in one tight
    cluster; the rest of the images fit): exactly one proposal."""
    rng = np.random.default_rng(5)
    ws = Workspace.init(tmp_path / "ws")
    use_tiny_clip(ws)
    ws.reload_config()
    area = Taxonomy.of(ws).add("Area", origin="seed")
    text = {Taxonomy.of(ws).add(f"Task {j}", area.id, origin="seed").id: _unit(rng.normal(size=D)) for j in range(6)}
    _text_rows(ws, text)
    files = make_images(tmp_path / "imgs", 150, size=(24, 20))
    from workbench.stages.images.register import register_images

    register_images(ws, files, root=tmp_path / "imgs", workers=1)
    ids = [r["id"] for r in ws.store.query("SELECT id FROM images ORDER BY id")]
    vecs = rng.normal(size=(len(ids), D))
    if family:   # 130 images close to the task types (they fit), 20 close to one new direction
        tv = np.stack(list(text.values()))
        vecs = tv[rng.integers(0, len(tv), len(ids))] + rng.normal(scale=0.09, size=(len(ids), D))
        vecs[:20] = _unit(rng.normal(size=D)) + rng.normal(scale=0.09, size=(20, D))
    _write_set(ws, "image", ids, [None] * len(ids), _unit(vecs))
    match(ws, 3, embed=False)
    assert len(candidates(ws, threshold=0.4)) == (20 if family else pytest.approx(150, abs=40))
    calls: list = []
    with OpenAIServer(lambda req: calls.append(1) or Reply('{"name": "Something new", "reason": "x"}')) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        res = discover(ws, min_cluster_size=8, threshold=0.4, progress=False)
    if family:
        assert [sorted(c.image_ids) for c in res.clusters] == [sorted(ids[:20])] and len(calls) == 1
        assert ws.store.scalar("SELECT count(*) FROM nodes WHERE origin='discovered'") == 1
    else:
        assert res.clusters == [] and not calls
        assert ws.store.scalar("SELECT count(*) FROM discoveries") == 0
    ws.close()


def test_duplicate_of_a_sibling_adds_no_node_and_cli_dry_run(world, monkeypatch):
    ws, family, _ = world
    sibling = Taxonomy.of(ws).index().kids(Taxonomy.of(ws).index().roots()[0].id)[0].name

    def script(req):
        parent = re.search(r"parents \(the first is suggested\):\s*\n- (.+)", req.text).group(1).strip()
        return Reply(json.dumps({"name": sibling.upper(), "parent": "Area 0"}) if parent == "Area 0" else
                     json.dumps({"name": sibling.upper(), "parent": parent}))

    with OpenAIServer(script) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        dry = run_cli("discover", ws.root, "--min-cluster-size", "8", "--threshold", "0.4", "--dry-run")
        assert dry.code == 0 and "cluster(s)" in dry.out, dry.err
        assert ws.store.scalar("SELECT count(*) FROM discoveries") == 0
        out = run_cli("discover", ws.root, "--min-cluster-size", "8", "--threshold", "0.4", "--json")
        assert out.code == 0, out.err
    props = json.loads(out.out)["proposals"]
    area0 = [p for p in props if p["parent_id"] == Taxonomy.of(ws).index().roots()[0].id]
    assert area0 and all(p["status"] == "duplicate" and p["node_id"] is None for p in area0)
    assert ws.store.scalar("SELECT count(*) FROM nodes WHERE origin='discovered'") == \
        sum(p["status"] == "proposed" for p in props)
    bad = run_cli("discover", ws.root, "--min-cluster-size", "1")
    assert bad.code == 2
