"""UMAP without paying numba's compile and umap's slow small-set path on every run.

Measured for 3,000 CLIP-like points (512-d, cosine) on the 2-core dev machine: `workbench map` took ~80 s, of which
~35 s was umap's small-data path (fewer than 4,096 points) computing the distance matrix through sklearn with umap's
numba cosine as a Python callable (4.5M calls), and most of the rest compiling umap's numba functions, which umap
does not mark `cache=True`. Here:

- the k nearest neighbours are computed exactly with sklearn (vectorised brute-force cosine) for sets up to
  EXACT_KNN_MAX points and handed to UMAP as `precomputed_knn`; larger sets keep pynndescent (whose functions are
  cached);
- numba's `njit`/`jit` default to `cache=True` while umap is imported and fitted, with the cache under the user's
  cache folder (NUMBA_CACHE_DIR wins when set), so the second run loads the compiled code instead of compiling it
  (the cache is per install path of umap and pynndescent: another virtual environment compiles once more);
- a set of up to EXACT_KNN_MAX points is laid out in N_EPOCHS epochs (umap's own choice above 10,000 points; it
  takes 500 below, which was ~60% of the remaining time).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

EXACT_KNN_MAX = 20_000   # brute-force kNN is a few seconds at this size; beyond it pynndescent is faster
N_EPOCHS = 200


def cache_dir() -> Path:
    """Where compiled numba code is kept between runs: NUMBA_CACHE_DIR, else <user cache>/taskgalaxy-workbench/numba."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "taskgalaxy-workbench" / "numba"


@contextlib.contextmanager
def cached_numba():
    """numba.njit / numba.jit default to cache=True inside the block, caching into `cache_dir()`. umap looks the
    decorators up on the numba module (at import and when it builds its layout functions), so it picks them up;
    functions numba cannot cache (closures) only warn and compile as before."""
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


def exact_knn(x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances) of each row's k nearest rows, itself first, as umap's precomputed_knn wants them."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(x)
    dist, idx = nn.kneighbors(x)
    return idx.astype(np.int32), np.maximum(dist, 0).astype(np.float32)


def fit(x: np.ndarray, n_neighbors: int, min_dist: float, metric: str, random_state) -> np.ndarray:
    """The (n, 2) UMAP embedding of x."""
    with cached_numba():
        import umap  # heavy (numba): imported only when a projection is actually computed

        small = len(x) <= EXACT_KNN_MAX
        knn = (*exact_knn(x, n_neighbors, metric), None) if small else (None, None, None)
        reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                            random_state=random_state, precomputed_knn=knn, n_epochs=N_EPOCHS if small else None)
        return reducer.fit_transform(x)
