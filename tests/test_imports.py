"""nltk's package import is circular, and crowd-kit imports it: the dashboard's prewarm thread (Dawid–Skene) and a
page request (the coverage matcher's stemmer) importing at once failed with "partially initialized module
'nltk.corpus'" (3 of 3 tries with plain imports). Through `workbench.core.imports.locked_import` both complete."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("crowdkit")
pytest.importorskip("nltk")

RACE = """
import threading, sys
from workbench.core.imports import locked_import
from workbench.analysis.reference_coverage import content_stems
errs = []
def consensus_side():
    try:
        locked_import("crowdkit.aggregation").DawidSkene
    except Exception as e:
        errs.append(repr(e))
def coverage_side():
    try:
        assert content_stems("reading charts", {})
    except Exception as e:
        errs.append(repr(e))
ts = [threading.Thread(target=consensus_side), threading.Thread(target=coverage_side)]
[t.start() for t in ts]; [t.join() for t in ts]
print(errs); sys.exit(1 if errs else 0)
"""


def test_consensus_and_coverage_imports_from_two_threads_at_once():
    for _ in range(2):   # a fresh interpreter each time: the race is in the first import
        r = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
