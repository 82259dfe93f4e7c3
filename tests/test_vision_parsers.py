import pytest

from workbench.stages.filter.parse import FilterParseError, parse_filter_reply
from workbench.stages.qa.parse import QAParseError, parse_qa_reply
from workbench.stages.referee.parse import parse_vote

CANDS = ["ocr~scene text~street sign reading", "object recognition~object counting", "image captioning"]


@pytest.mark.parametrize("raw,kept,outside,none", [
    ('["object recognition~object counting", "image captioning"]', CANDS[1:], [], False),
    ('```json\n["image captioning"]\n```', ["image captioning"], [], False),
    ('Here you go: {"labels": ["street sign reading"]}', [CANDS[0]], [], False),
    ("1. object counting\n2. Image Captioning\n3. weather recognition", CANDS[1:], ["weather recognition"], False),
    ("object recognition∼object counting", [CANDS[1]], [], False),
    ("image captioning, object counting", CANDS[1:], [], False),
    ("[]", [], [], True),
    ("None of them", [], [], True),
    ("None", [], [], True),
    ('["made up label"]', [], ["made up label"], False),
])
def test_filter_reply(raw, kept, outside, none):
    r = parse_filter_reply(raw, CANDS)
    assert (r.kept, r.not_candidates, r.none) == (kept, outside, none)


def test_filter_empty_reply_is_a_parse_error():
    with pytest.raises(FilterParseError):
        parse_filter_reply("   ", CANDS)


REQ = ["ocr~scene text~street sign reading", "object recognition~object counting"]


def test_qa_json_and_rejections():
    raw = """```json
[{"task_type": "ocr~scene text~street sign reading", "question": "What does the sign say?", "answer": "STOP"},
 {"task_type": "object counting", "question": "How many cars?", "answer": "  "},
 {"task_type": "weather recognition", "question": "Is it raining?", "answer": "No"}]
```"""
    r = parse_qa_reply(raw, REQ)
    assert [(p.task_type, p.answer) for p in r.accepted] == [(REQ[0], "STOP")]
    assert [(p.task_type, p.reason) for p in r.rejected] == [(REQ[1], "empty answer"),
                                                             ("weather recognition", "task type was not requested")]


@pytest.mark.parametrize("answer", ["", "   ", "[]", "...", "?!", None])
def test_qa_blank_answers_are_dropped(answer):
    import json
    raw = json.dumps([{"task_type": REQ[1], "question": "How many?", "answer": answer}])
    r = parse_qa_reply(raw, REQ)
    assert not r.accepted and r.rejected[0].reason == "empty answer"


def test_qa_fallback_blocks():
    raw = ("Task type: object counting\nQuestion: How many birds are on the wire?\nAnswer: Seven.\n\n"
           "Task type: street sign reading\nQuestion: What is written?\nAnswer: Main St")
    r = parse_qa_reply(raw, REQ)
    assert [(p.task_type, p.question, p.answer) for p in r.accepted] == [
        (REQ[1], "How many birds are on the wire?", "Seven."), (REQ[0], "What is written?", "Main St")]


@pytest.mark.parametrize("raw", ["", "I cannot help with that.", '{"foo": 1}'])
def test_qa_unreadable_is_a_parse_error(raw):
    with pytest.raises(QAParseError):
        parse_qa_reply(raw, REQ)


@pytest.mark.parametrize("raw,vote", [
    ("1", 1), ("0", 0), ("Score: 1", 1), ("The score is 1", 1), ("yes", 1), ("Yes.", 1), ("no", 0), ("1.", 1),
    ("**0**", 0), ("Score: 0 (the question does not fit)", 0),
    ("", None), ("maybe", None), ("1 or 0", None), ("10", None), ("0.5", None), (None, None), ("2", None),
    ("Yes, 0", None), ("I think so", None),
])
def test_referee_votes(raw, vote):
    assert parse_vote(raw) == vote


def test_qa_single_pair_without_task_line_when_one_type_was_requested():
    r = parse_qa_reply("Question: What does the sign say?\nAnswer: STOP", REQ[:1])
    assert [(p.task_type, p.question, p.answer) for p in r.accepted] == [(REQ[0], "What does the sign say?", "STOP")]
    r2 = parse_qa_reply("Question: What does the sign say?\nAnswer: STOP", REQ)   # two requested: ambiguous
    assert not r2.accepted and r2.rejected[0].reason == "no task type given (several were requested)"


def test_filter_label_shared_by_two_candidates_is_ambiguous():
    cands = ["objects~fine-grained recognition", "plants~fine-grained recognition"]
    r = parse_filter_reply('["fine-grained recognition"]', cands)
    assert (r.kept, r.not_candidates, r.ambiguous, r.none) == ([], [], ["fine-grained recognition"], False)
