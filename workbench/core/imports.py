"""Imports of libraries that are not safe to import from two threads at once.

nltk's package import is circular (nltk.stem.snowball imports nltk.corpus, which is mid-import in the other
thread): crowd-kit imports nltk, so the dashboard's background prewarm (consensus) and a page's own request
(reference coverage's stemmer) could meet halfway and fail with "partially initialized module 'nltk.corpus'".
Every import of those libraries goes through `locked_import`, so the first one completes before another starts.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType

_LOCK = threading.RLock()


def locked_import(name: str) -> ModuleType:
    """`importlib.import_module(name)`, one thread at a time (cheap once imported)."""
    with _LOCK:
        return importlib.import_module(name)
