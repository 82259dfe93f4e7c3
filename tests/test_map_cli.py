"""`workbench map`: the embedding map's projection computed headless and stored for the dashboard."""

from conftest import run_cli


def test_map_computes_once_then_reloads(seeded_ws):
    from workbench.apps.demo import TEXT_SET_KEY, build_task_map

    r = run_cli("map", seeded_ws.root)
    assert r.code == 2 and "no embeddings yet" in r.err
    assert build_task_map(seeded_ws) == 72
    r = run_cli("map", seeded_ws.root, "--method", "pca")
    assert r.code == 0 and "pca projection of 72 points" in r.out and "computed in" in r.out
    r = run_cli("map", seeded_ws.root, "--method", "pca", "--set", TEXT_SET_KEY)
    assert r.code == 0 and "already stored" in r.out
    assert seeded_ws.store.scalar("SELECT count(*) FROM projections WHERE method='pca'") == 1
    r = run_cli("map", seeded_ws.root, "--method", "tsne")
    assert r.code == 2 and "umap, pca" in r.err
