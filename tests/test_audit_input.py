"""`workbench audit` refuses what it cannot audit with one `error:` line and rc 2, before anything is stored or
replaced: items with no instruction, text that is not UTF-8, files that are not Parquet, a format that does
not match the file, a stored audit of the same name (without --replace), a second live audit of one name."""

import json

import pytest

from conftest import run_cli
from workbench.analysis import audit as A
from workbench.analysis import audit_read as R


def one_error(res, *needles):
    lines = [line for line in res.err.splitlines() if line.startswith("error")]
    assert res.code == 2, (res.code, res.err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.err, res.err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def llava(qs):
    return [{"id": f"q{i}", "image": f"{i}.jpg",
             "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": "ok"}]}
            for i, q in enumerate(qs)]


def test_records_without_instructions_are_refused(seeded_ws, tmp_path):
    f = tmp_path / "noconv.json"
    f.write_text(json.dumps([{"id": i, "image": f"{i}.jpg", "caption": "a dog"} for i in range(100)]))
    one_error(run_cli("audit", seeded_ws.root, f), "item 0 (id 0) has no instruction", "caption, id, image")
    s = tmp_path / "convstr.json"   # a conversation that is a string, not JSON turns
    s.write_text(json.dumps([{"id": "a", "conversations": "Human: what is this?"}]))
    one_error(run_cli("audit", seeded_ws.root, s), "`conversations` (str)")
    pd = pytest.importorskip("pandas")
    pq = tmp_path / "other.parquet"
    pd.DataFrame({"url": ["x", "y"], "width": [1, 2]}).to_parquet(pq)
    one_error(run_cli("audit", seeded_ws.root, pq), "item 0", "url, width")
    assert A.list_audits(seeded_ws).empty


def test_conversations_stored_as_json_text_are_read(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text(json.dumps({"id": "a", "conversations": json.dumps(llava(["What is the date?"])[0]["conversations"])})
                 + "\n")
    assert R.read_items(f).instructions == ["What is the date?"]


def test_short_first_turns_bring_the_later_ones_and_long_ones_are_cut(tmp_path):
    rec = {"conversations": [{"from": "human", "value": "<image>\nWhat is the date?"}, {"from": "gpt", "value": "x"},
                             {"from": "human", "value": "Read the title of the letter."}]}
    long = {"conversations": [{"from": "human", "value": "word " * 100_000}]}
    f = tmp_path / "t.json"
    f.write_text(json.dumps([rec, long]))
    it = R.read_items(f)
    assert it.instructions[0] == "What is the date?"
    assert it.queries[0] == "What is the date? Read the title of the letter."
    assert len(it.queries[1]) == R.MAX_CHARS and it.truncated == 1


def test_unreadable_files_are_one_line(seeded_ws, tmp_path):
    lat = tmp_path / "latin.json"
    lat.write_bytes(json.dumps(llava(["Qu'est-ce que c'est ? caf\u00e9"]), ensure_ascii=False).encode("latin-1"))
    one_error(run_cli("audit", seeded_ws.root, lat), "not UTF-8", "iconv")
    latl = tmp_path / "latin.jsonl"
    latl.write_bytes(json.dumps(llava(["caf\u00e9"])[0], ensure_ascii=False).encode("latin-1") + b"\n")
    one_error(run_cli("audit", seeded_ws.root, latl), "line 1", "not UTF-8")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(bytes(range(256)) * 8)
    one_error(run_cli("audit", seeded_ws.root, junk), "not a readable Parquet file")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(llava(["What is this?"])))
    one_error(run_cli("audit", seeded_ws.root, good, "--format", "parquet"), "not a readable Parquet file",
              "drop --format parquet")
    one_error(run_cli("audit", seeded_ws.root, good, "--format", "csv"), "--format 'csv'")
    one_error(run_cli("audit", seeded_ws.root, tmp_path, "--format", "jsonl"), "a folder")
    assert A.list_audits(seeded_ws).empty


def test_a_second_live_audit_of_one_name_is_refused(seeded_ws, tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(llava(["What is this?"])))
    with A._running(seeded_ws, "busy"):
        one_error(run_cli("audit", seeded_ws.root, good, "--name", "busy"), "is running right now")
    assert A.list_audits(seeded_ws).empty


def test_task_name_is_detected_as_the_own_task_field(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps({**r, "task_name": "ocr"}) for r in llava(["Read the sign.", "What is it?"])))
    it = R.read_items(f)
    assert it.task_field == "task_name" and it.tasks == ["ocr", "ocr"] and it.ids == ["q0", "q1"]


def test_an_own_label_that_disagrees_with_the_instructions_is_no_evidence():
    import numpy as np

    cats = np.array([0, 0, 1, 1])                       # task types 0-1 in category 0, 2-3 in category 1
    text = np.array([[0.9, 0.1, 0.2, 0.1],              # items 0-2 carry label 0, item 3 label 1
                     [0.2, 0.8, 0.1, 0.1],
                     [0.1, 0.2, 0.3, 0.9],
                     [0.1, 0.1, 0.2, 0.9]])
    bias = np.array([[0.5, 0.1, 0.0, 0.0],              # label 0 points to category 0: 2 of its 3 items agree
                     [0.6, 0.0, 0.0, 0.0]])             # label 1 points to category 0: its one item does not
    keep = A.consistent_labels(bias, np.array([0, 0, 0, 1]), text, cats)
    assert keep.tolist() == [1.0, 0.0]
