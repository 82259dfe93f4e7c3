"""UMAP without paying numba's compile and umap's slow small-set path on every run.

Measured for 3,000 CLIP-like points (512-d, cosine) on the 2-core dev machine: `workbench map` took ~80 s, of which
~35 s was umap's small-data path (fewer than 4,096 points) computing the distance matrix through sklearn with umap's
numba cosine as a Python callable (4.5M calls), and most of the rest compiling umap's numba functions, which umap
does not mark `cache=True`. Here:

- the k nearest neighbours are computed exactly (blocks of cosine or euclidean matrix products in numpy; other
  metrics through sklearn) for sets up to EXACT_KNN_MAX points and handed to UMAP as `precomputed_knn`; larger sets
  keep pynndescent (whose functions are cached). numpy's product was ~6x less CPU than sklearn's brute-force cosine
  at 3,500 points and spares importing sklearn.neighbors;
- numba's `njit`/`jit` default to `cache=True` while umap is imported and fitted, with the cache under the user's
  cache folder (NUMBA_CACHE_DIR wins when set), so the second run loads the compiled code instead of compiling it
  (the cache is per install path of umap and pynndescent: another virtual environment compiles once more;
  `cache_misses` says whether a run compiled);
- a set of up to EXACT_KNN_MAX points is laid out in `n_epochs(n)` epochs: 200 (umap's own choice above 10,000
  points; it takes 500 below, which was ~60% of the remaining time) up to 1,500 points, fewer above, down to 100
  from 3,000 points: the layout's time is points x epochs. On sklearn's digits (1,797 points) 100 epochs kept
  trustworthiness at 0.984 against 0.985 at 200 and 0.987 at 500, for half the layout time of 200.

What a second `workbench map` of 3,500 points (512-d) still pays is mostly importing umap (numba, pynndescent,
sklearn, scipy: ~2.7 of ~5.5 CPU seconds): `preload()` starts that import on a thread while the caller reads the
embeddings and finds the neighbours (numpy's products run beside it), and `fit` waits for it.
`benchmarks/bench_map.py` measures a second run against the previous method.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from pathlib import Path

import numpy as np

EXACT_KNN_MAX = 20_000   # brute-force kNN is a few seconds at this size; beyond it pynndescent is faster
MAX_EPOCHS, MIN_EPOCHS = 200, 100
EPOCH_BUDGET = 300_000   # points x epochs: 200 epochs up to 1,500 points, 100 from 3,000
KNN_BLOCK = 1024         # rows per matrix product: 1,024 x 20,000 float32 scores = 80 MB at most


def cache_dir() -> Path:
    """Where compiled numba code is kept between runs: NUMBA_CACHE_DIR, else <user cache>/taskgalaxy-workbench/numba."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "taskgalaxy-workbench" / "numba"


# The block below swaps module globals (numba's decorators, the warning filters): two threads inside it at once (the
# preload thread and a fit, two projections computed in one dashboard process) would restore each other's values and
# could leave numba.njit wrapped for good. One thread at a time; re-entrant for nesting in one thread.
_NUMBA_LOCK = threading.RLock()


@contextlib.contextmanager
def cached_numba():
    """numba.njit / numba.jit default to cache=True inside the block, caching into `cache_dir()`. umap looks the
    decorators up on the numba module (at import and when it builds its layout functions), so it picks them up;
    functions numba cannot cache (closures) only warn and compile as before. One thread at a time (`_NUMBA_LOCK`)."""
    with _NUMBA_LOCK, _cache_on():
        yield


@contextlib.contextmanager
def _cache_on():
    import numba

    path = cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:   # a read-only home: compile as before rather than fail
        yield
        return
    before = (numba.njit, numba.jit, numba.config.CACHE_DIR)

    def with_cache(decorator):
        def wrapped(*args, **kwargs):
            kwargs.setdefault("cache", True)
            return decorator(*args, **kwargs)
        return wrapped

    numba.njit, numba.jit = with_cache(before[0]), with_cache(before[1])
    numba.config.CACHE_DIR = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "cannot cache" notes, and umap's "a seed makes it single-threaded"
            yield
    finally:
        numba.njit, numba.jit, numba.config.CACHE_DIR = before


_preloading: threading.Thread | None = None


def preload() -> None:
    """Start importing umap (with the cache on) in the background; a no-op once it is imported or started."""
    global _preloading
    if _preloading is not None or "umap" in sys.modules:
        return

    def load():
        with contextlib.suppress(Exception), cached_numba():   # an import error is raised again by `fit`
            import umap  # noqa: F401

    _preloading = threading.Thread(target=load, name="umap-preload", daemon=True)
    _preloading.start()


def n_epochs(n: int) -> int:
    """Layout epochs for an exactly-neighboured set of n points (see the module docstring)."""
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, EPOCH_BUDGET // max(n, 1))))


def exact_knn(x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances) of each row's k nearest rows, itself first, as umap's precomputed_knn wants them."""
    if metric not in ("cosine", "euclidean"):
        from sklearn.neighbors import NearestNeighbors

        dist, idx = NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(x).kneighbors(x)
        return idx.astype(np.int32), np.maximum(dist, 0).astype(np.float32)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1)
    sq = np.einsum("ij,ij->i", x, x)
    n = len(x)
    idx, dist = np.empty((n, k), np.int32), np.empty((n, k), np.float32)
    for start in range(0, n, KNN_BLOCK):
        stop = min(n, start + KNN_BLOCK)
        score = x[start:stop] @ x.T                  # cosine similarity; for euclidean, -(squared distance) below
        if metric == "euclidean":
            score = 2 * score - sq[None, :] - sq[start:stop, None]
        rows = np.arange(stop - start)
        score[rows, rows + start] = np.inf           # itself first, even among duplicates
        part = np.argpartition(-score, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(score, part, 1)
        order = np.argsort(-top, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(part, order, 1)
        top = np.take_along_axis(top, order, 1)
        top[:, 0] = 1.0 if metric == "cosine" else 0.0
        dist[start:stop] = 1 - top if metric == "cosine" else np.sqrt(np.maximum(-top, 0))
    return idx, np.maximum(dist, 0)


def cache_misses() -> dict[str, int]:
    """Per umap layout function compiled in this process, how many of its compiled versions were not loaded from
    the cache (0 everywhere: this run loaded what an earlier run compiled)."""
    import umap.layouts

    fns = {name: f for name, f in vars(umap.layouts).items() if hasattr(f, "stats") and f.stats.cache_path}
    return {name: sum(f.stats.cache_misses.values()) for name, f in fns.items()
            if f.stats.cache_hits or f.stats.cache_misses}


def wait_preload() -> None:
    """Wait for `preload`'s import to finish (it changes numba's decorators and the warning filters while it runs)."""
    if _preloading is not None:
        _preloading.join()


def fit(x: np.ndarray, n_neighbors: int, min_dist: float, metric: str, random_state) -> np.ndarray:
    """The (n, 2) UMAP embedding of x."""
    small = len(x) <= EXACT_KNN_MAX
    knn = (*exact_knn(x, n_neighbors, metric), None) if small else (None, None, None)   # beside `preload`
    wait_preload()
    with cached_numba():
        import umap  # heavy (numba): imported only when a projection is actually computed

        reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                            random_state=random_state, precomputed_knn=knn,
                            n_epochs=n_epochs(len(x)) if small else None)
        return reducer.fit_transform(x)
