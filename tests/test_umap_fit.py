"""umap_fit: exact neighbours for small sets, and numba's compiled code kept between runs."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.analysis import umap_fit


def _plus_one(a):
    return a + 1


def test_exact_knn_lists_each_point_first_then_its_nearest():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    idx, dist = umap_fit.exact_knn(x, 2, "cosine")
    assert idx[:, 0].tolist() == [0, 1, 2, 3]       # itself first, as umap's precomputed_knn expects
    assert idx[:, 1].tolist() == [1, 0, 3, 2]
    assert dist.dtype == np.float32 and (dist[:, 0] < 1e-6).all() and (dist[:, 1] > 0).all()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_knn_agrees_with_sklearn_across_blocks(metric, monkeypatch):
    from sklearn.neighbors import NearestNeighbors

    monkeypatch.setattr(umap_fit, "KNN_BLOCK", 7)      # several blocks, the last one short
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    idx, dist = umap_fit.exact_knn(x, 5, metric)
    want_d, want_i = NearestNeighbors(n_neighbors=5, metric=metric, algorithm="brute").fit(x).kneighbors(x)
    assert idx.dtype == np.int32 and idx.tolist() == want_i.tolist()
    np.testing.assert_allclose(dist, want_d, atol=1e-5)


def test_exact_knn_puts_each_point_first_among_duplicates():
    x = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], np.float32)
    idx, dist = umap_fit.exact_knn(x, 3, "cosine")
    assert idx[:, 0].tolist() == [0, 1, 2, 3] and (dist[:, 0] == 0).all()
    assert sorted(idx[1].tolist()) == [0, 1, 2]


def test_fewer_epochs_only_for_larger_sets():
    assert umap_fit.n_epochs(100) == umap_fit.n_epochs(1_500) == 200
    assert umap_fit.n_epochs(2_000) == 150
    assert umap_fit.n_epochs(3_000) == umap_fit.n_epochs(20_000) == 100


def test_numba_caches_inside_the_block_only(tmp_path, monkeypatch):
    import numba

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "nc"))
    assert umap_fit.cache_dir() == tmp_path / "nc"
    before = numba.njit
    with umap_fit.cached_numba():
        assert numba.njit is not before
        assert numba.njit(_plus_one)(1) == 2
    assert numba.njit is before                      # restored: the rest of the process compiles as it asked
    assert list((tmp_path / "nc").rglob("*.nbi"))    # the compiled code is on disk for the next run


def test_the_cache_lives_under_the_user_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert umap_fit.cache_dir() == tmp_path / "taskgalaxy-workbench" / "numba"


def test_two_threads_in_the_cache_block_leave_numba_as_it_was(tmp_path, monkeypatch):
    """The preload thread and a fit (or two projections in one dashboard process) at once: if the first leaves the
    block while the second is still inside, the second restores the first's wrapped decorator on its way out and
    numba.njit stays wrapped for good -- unless one thread at a time is inside."""
    import threading
    import time

    import numba

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    original = numba.njit
    inside, release, first_done = threading.Event(), threading.Event(), threading.Event()

    def first():
        with umap_fit.cached_numba():
            inside.set()
            release.wait(10)

    def second():
        with umap_fit.cached_numba():
            first_done.wait(10)      # still inside when the first thread has left

    t1 = threading.Thread(target=first)
    t1.start()
    assert inside.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.2)                  # the second thread reaches the block while the first is inside it
    release.set()
    t1.join(10)
    first_done.set()
    t2.join(10)
    assert not t1.is_alive() and not t2.is_alive()
    assert numba.njit is original
