"""Projections are stored under a key of their inputs and parameters and reloaded, not recomputed."""

import numpy as np
import pytest

from workbench.analysis import projection
from workbench.core.errors import WorkbenchError


def _add_set(ws, key, kind, items, dim=8, seed=0):
    arr = np.random.default_rng(seed).normal(size=(len(items), dim)).astype(np.float32)
    np.save(ws.arrays_dir / f"{key}.npy", arr)
    with ws.store.write() as c:
        c.execute("INSERT INTO embedding_sets(key, kind, model, dim, array_file, created_at, updated_at) "
                  "VALUES (?, ?, 'm', ?, ?, 't', 't')", (key, kind, dim, f"{key}.npy"))
        c.executemany("INSERT INTO embedding_rows(set_key, row, item_id) VALUES (?, ?, ?)",
                      [(key, i, it) for i, it in enumerate(items)])
    return arr


def test_pca_projection_is_stored_and_reloaded(ws):
    _add_set(ws, "img", "image", [f"i{i}" for i in range(30)])
    _add_set(ws, "txt", "text", [f"t{i}" for i in range(10)], seed=1)
    assert projection.get_or_compute(ws, ["img", "txt"], "pca", compute=False) is None
    p = projection.get_or_compute(ws, ["img", "txt"], "pca")
    assert p.coords.shape == (40, 2)
    assert p.items[0] == ("image", "i0") and p.items[-1] == ("task", "t9")
    f = ws.arrays_dir / f"projection-{p.key}.npy"
    mtime = f.stat().st_mtime_ns
    again = projection.get_or_compute(ws, ["txt", "img"], "pca")   # same inputs, other order: same key
    assert again.key == p.key and f.stat().st_mtime_ns == mtime and again.created_at == p.created_at
    np.testing.assert_allclose(again.coords, p.coords)
    assert ws.store.scalar("SELECT count(*) FROM projections") == 1
    # New inputs (a set gained rows) -> a new key.
    with ws.store.write() as c:
        c.execute("UPDATE embedding_sets SET updated_at='t2' WHERE key='txt'")
    assert projection.get_or_compute(ws, ["img", "txt"], "pca", compute=False) is None


def test_projection_errors_are_clear(ws):
    _add_set(ws, "img", "image", [f"i{i}" for i in range(5)], dim=8)
    _add_set(ws, "txt", "text", [f"t{i}" for i in range(5)], dim=4)
    with pytest.raises(WorkbenchError, match="different dimensions"):
        projection.get_or_compute(ws, ["img", "txt"], "pca")
    with pytest.raises(WorkbenchError, match="no embedding set 'nope'"):
        projection.get_or_compute(ws, ["nope"], "pca")
    with pytest.raises(WorkbenchError, match="method must be one of"):
        projection.get_or_compute(ws, ["img"], "tsne")


@pytest.mark.timeout(300)
def test_umap_projection_real_fit(ws):
    pytest.importorskip("umap")
    _add_set(ws, "img", "image", [f"i{i}" for i in range(60)], dim=8)
    p = projection.get_or_compute(ws, ["img"], "umap", {"n_neighbors": 5})
    assert p.method == "umap" and p.params["n_neighbors"] == 5 and p.coords.shape == (60, 2)
    assert np.isfinite(p.coords).all()
    assert projection.load(ws, p.key).coords.shape == (60, 2)


_FIT_AND_REPORT = """
import json, numpy as np
from workbench.analysis import umap_fit
x = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
assert umap_fit.fit(x, 5, 0.1, "cosine", 0).shape == (40, 2)
print(json.dumps(umap_fit.cache_misses()))
"""


@pytest.mark.timeout(600)
def test_a_second_process_loads_umaps_compiled_code_from_the_cache():
    """The second run loads what the first compiled (numba's own hit/miss counters, not a timing); the first run
    fills the user cache where it is cold (a fresh CI machine), or already loads from it."""
    pytest.importorskip("umap")
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [subprocess.run([sys.executable, "-c", _FIT_AND_REPORT], capture_output=True, text=True, env=env,
                           cwd=REPO, check=True) for _ in range(2)]
    second = json.loads(runs[1].stdout.strip().splitlines()[-1])
    assert "_nb_optimize_layout_euclidean_single_epoch" in second     # the layout's epoch function ran
    assert set(second.values()) == {0}, second                       # and nothing was compiled again
