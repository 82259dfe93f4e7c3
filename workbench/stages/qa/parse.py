"""Reading the Q&A VLM's reply: one question-answer pair per requested task type.

Structured JSON first (a list of {task_type, question, answer}, or an object wrapping one), then a
tolerant fallback for "Task type: / Question: / Answer:" blocks. A pair whose task type was not
requested is rejected; a pair with an empty answer (empty, whitespace, `[]`, punctuation only) or an
empty question is dropped with its reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from workbench.core.errors import ParseFailure
from workbench.stages.replies import first_json, is_blank_answer, strip_fences
from workbench.taxonomy.names import SEP, name_key, replace_lookalikes


class QAParseError(ParseFailure):
    """The reply holds no readable question-answer pair."""


@dataclass
class QAPair:
    task_type: str          # the requested path it was matched to (or the label as written, if rejected)
    question: str
    answer: str
    reason: str | None = None   # None: accepted


@dataclass
class QAResult:
    pairs: list[QAPair] = field(default_factory=list)

    @property
    def accepted(self) -> list[QAPair]:
        return [p for p in self.pairs if p.reason is None]

    @property
    def rejected(self) -> list[QAPair]:
        return [p for p in self.pairs if p.reason is not None]


_KEYS = {
    "task_type": ("task_type", "task type", "tasktype", "task", "type", "label", "category"),
    "question": ("question", "q", "query", "instruction"),
    "answer": ("answer", "a", "response", "output"),
}
_BLOCK = re.compile(
    r"(?:task[ _]?type|task|label)\s*[:：]\s*(?P<t>.+?)\s*\n+\s*(?:\*\*)?q(?:uestion)?(?:\*\*)?\s*[:：]\s*(?P<q>.+?)"
    r"\s*\n+\s*(?:\*\*)?a(?:nswer)?(?:\*\*)?\s*[:：]\s*(?P<a>.*?)"
    r"(?=\n\s*(?:\*\*)?(?:task[ _]?type|task|label)\s*[:：]|\Z)",
    re.IGNORECASE | re.DOTALL)


_PAIR = re.compile(r"(?:\*\*)?q(?:uestion)?(?:\*\*)?\s*[:：]\s*(?P<q>.+?)\s*\n+\s*(?:\*\*)?a(?:nswer)?(?:\*\*)?\s*[:：]"
                   r"\s*(?P<a>.*)\Z", re.IGNORECASE | re.DOTALL)


def _key(label: str) -> str:
    text, _ = replace_lookalikes(label)
    return SEP.join(name_key(p) for p in text.split(SEP))


def _field(obj: dict, name: str):
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    for k in _KEYS[name]:
        if k in lowered:
            return lowered[k]
    return None


def _items(raw: str) -> list[dict]:
    value = first_json(raw)
    if isinstance(value, dict):
        for k in ("pairs", "qa", "items", "results", "questions", "data"):
            if isinstance(value.get(k), list):
                value = value[k]
                break
        else:
            value = [value] if _field(value, "question") is not None else [
                {"task_type": k, **v} for k, v in value.items() if isinstance(v, dict)]
    if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        return value
    blocks = [{"task_type": m["t"].strip(" *"), "question": m["q"].strip(" *"), "answer": m["a"].strip(" *")}
              for m in _BLOCK.finditer(strip_fences(raw))]
    if not blocks:  # a single "Question: … Answer: …" pair with no task-type line
        m = _PAIR.search(strip_fences(raw))
        if m:
            blocks = [{"task_type": None, "question": m["q"].strip(" *"), "answer": m["a"].strip(" *")}]
    return blocks


def parse_qa_reply(raw: str, requested: list[str]) -> QAResult:
    if not raw or not raw.strip():
        raise QAParseError("empty reply")
    items = _items(raw)
    if not items:
        raise QAParseError("no JSON list of {task_type, question, answer} and no 'Question: … Answer: …' text found")
    by_full = {_key(r): r for r in requested}
    by_leaf: dict[str, list[str]] = {}
    for r in requested:
        by_leaf.setdefault(_key(r.split(SEP)[-1]), []).append(r)
    result = QAResult()
    seen: set[str] = set()
    for obj in items:
        label = _field(obj, "task_type")
        q = _field(obj, "question")
        a = _field(obj, "answer")
        label_s = "" if label is None else str(label).strip()
        q_s = "" if q is None else str(q).strip()
        a_s = a.strip() if isinstance(a, str) else ("" if a is None else str(a))
        if not label_s and len(requested) == 1 and len(items) == 1:
            label_s = requested[0]   # one requested type, one pair: the label may be left out
        k = _key(label_s) if label_s else ""
        match = by_full.get(k) or (by_leaf[k][0] if len(by_leaf.get(k, [])) == 1 else None)
        if match is None:
            why = "task type was not requested" if label_s else "no task type given (several were requested)"
            result.pairs.append(QAPair(label_s, q_s, a_s, why))
        elif match in seen:
            result.pairs.append(QAPair(match, q_s, a_s, "second pair for the same task type"))
        elif is_blank_answer(q_s):
            result.pairs.append(QAPair(match, q_s, a_s, "empty question"))
        elif is_blank_answer(a):
            result.pairs.append(QAPair(match, q_s, a_s, "empty answer"))
        else:
            seen.add(match)
            result.pairs.append(QAPair(match, q_s, a_s))
    return result
