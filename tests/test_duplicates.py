"""Near-duplicate merge suggestions and coverage against a reference taxonomy (real MiniLM embeddings)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from workbench.analysis.duplicates import apply_merge, suggest_merges
from workbench.analysis.reference_coverage import reference_coverage
from workbench.models.textembed import embed_texts
from workbench.taxonomy.model import Taxonomy
from workbench.taxonomy.names import loose_key

pytestmark = pytest.mark.timeout(120)


def test_embed_texts_normalised_and_cached(tmp_path):
    v = embed_texts(["count the people", "people counting", "read the chart title"])
    assert v.dtype == np.float32 and v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > 0.7 > v[0] @ v[2]
    c = embed_texts(["people counting", "count the people"], cache_dir=tmp_path)
    assert np.allclose(c, v[[1, 0]], atol=1e-5) and len(list(tmp_path.glob("*.npz"))) == 1
    again = embed_texts(["count the people", "new text"], cache_dir=tmp_path)
    assert np.allclose(again[0], v[0], atol=1e-5)
    assert embed_texts([]).shape == (0, 384)


def build(ws):
    t = Taxonomy.of(ws)
    for p in ["Counting~Crowd counting", "Counting~Counting of crowds", "Counting~Image-Captioning",
              "Counting~image captioning!", "Counting~Read the clock",
              "OCR~Crowd counting", "OCR~Receipt reading", "Charts~Bar chart question answering"]:
        t.add_path(p, status="proposed" if "crowds" in p else "accepted")


def test_loose_key():
    assert loose_key("Image-Captioning") == loose_key("image  captioning!") == "imagecaptioning"


def test_suggestions_siblings_tree_and_apply(ws):
    build(ws)
    sib = suggest_merges(ws, scope="siblings", threshold=0.8)
    pairs = {(s.a_path, s.b_path, s.kind) for s in sib}
    assert ("Counting~Image-Captioning", "Counting~image captioning!", "exact") in pairs
    emb = [s for s in sib if s.kind == "embedding"]
    assert [(s.a_path, s.b_path) for s in emb] == [("Counting~Crowd counting", "Counting~Counting of crowds")]
    assert 0.8 <= emb[0].score < 1
    # Not suggested: unrelated names, and pairs under different parents in the siblings scope.
    assert not any("Read the clock" in s.a_path + s.b_path for s in sib)
    assert not any(s.b_path == "OCR~Crowd counting" for s in sib)
    tree = suggest_merges(ws, scope="tree", threshold=0.8)
    assert any({s.a_path, s.b_path} == {"Counting~Crowd counting", "OCR~Crowd counting"} and s.kind == "exact"
               for s in tree)
    # Apply: the proposed near-duplicate goes into the accepted one.
    assert emb[0].b_id == Taxonomy.of(ws).find("Counting~Counting of crowds").id
    apply_merge(ws, emb[0])
    assert Taxonomy.of(ws).find("Counting~Counting of crowds") is None
    assert Taxonomy.of(ws).resolve(emb[0].b_id).id == emb[0].a_id


def test_cli_duplicates_and_coverage(ws, tmp_path):
    build(ws)
    res = run_cli("taxonomy", "duplicates", ws.root, "--exact-only", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert [d["kind"] for d in data] == ["exact"] and "Image-Captioning" in data[0]["a_path"]
    res = run_cli("taxonomy", "duplicates", ws.root, "--exact-only", "--apply")
    assert res.code == 0 and "merged 1 pair(s)" in res.out
    assert Taxonomy.of(ws).find("Counting~image captioning!") is None
    res = run_cli("taxonomy", "duplicates", ws.root, "--scope", "everything")
    assert res.code == 2 and "scope" in res.err

    ref = tmp_path / "bench.txt"
    ref.write_text("Counting~Count the people in a crowd\nDocument~Read a receipt\nAudio~Transcribe speech\n")
    rep = reference_coverage(ws, ref, threshold=0.5)
    by = {r.reference_path: r for r in rep.rows}
    assert by["Counting~Count the people in a crowd"].nearest_path.endswith("Crowd counting")
    assert by["Document~Read a receipt"].nearest_path == "OCR~Receipt reading"
    assert [g.reference_path for g in rep.gaps] == ["Audio~Transcribe speech"]
    res = run_cli("taxonomy", "coverage", ws.root, ref, "--threshold", "0.5", "--gaps")
    assert res.code == 0 and "GAP" in res.out and "Audio~Transcribe speech" in res.out
    assert "Read a receipt" not in res.out and "1 gap(s)" in res.out
    res = run_cli("taxonomy", "coverage", ws.root, tmp_path / "missing.txt")
    assert res.code == 2 and "no such file" in res.err


def test_apply_merges_only_the_listed_pairs(ws):
    """Two suggestions sharing a node: once the first merge absorbs it, the second is skipped, not followed."""
    from workbench.analysis.duplicates import MergeSuggestion
    from workbench.core.errors import WorkbenchError

    t = Taxonomy.of(ws)
    a = t.add_path("objects~a1")
    b = t.add_path("animals~b1")
    c = t.add_path("landmarks~c1")
    objects, animals, landmarks = (t.find(x) for x in ("objects", "animals", "landmarks"))
    s1 = MergeSuggestion(objects.id, animals.id, "objects", "animals", 0.7, "embedding")
    s2 = MergeSuggestion(landmarks.id, animals.id, "landmarks", "animals", 0.65, "embedding")
    apply_merge(ws, s1)
    with pytest.raises(WorkbenchError, match="already merged away"):
        apply_merge(ws, s2)
    assert t.path(b.id) == "objects~b1" and t.path(c.id) == "landmarks~c1" and t.path(a.id) == "objects~a1"
