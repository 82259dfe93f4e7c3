"""Tolerant reading of model replies shared by the vision stages: code fences, the first JSON
value embedded in prose, bullets and numbering."""

from __future__ import annotations

import json
import re

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_BULLET = re.compile(r"^\s*(?:[-*•+]|\(?\d{1,3}[.):]|\(?[a-zA-Z][.)])\s+")


def strip_fences(text: str) -> str:
    m = _FENCE.search(text)
    return m.group(1) if m else text


def first_json(text: str):
    """The first JSON array or object in `text` (fences and surrounding prose allowed), or None."""
    body = strip_fences(text)
    decoder = json.JSONDecoder()
    for i, ch in enumerate(body):
        if ch in "[{":
            try:
                value, _ = decoder.raw_decode(body[i:])
                return value
            except json.JSONDecodeError:
                continue
    return None


def clean_line(line: str) -> str:
    """A list item without its bullet/number, quotes and trailing punctuation."""
    line = _BULLET.sub("", line.strip())
    line = line.strip().strip("\"'`“”‘’").strip()
    return line.rstrip(",;.").strip().strip("\"'`“”‘’").strip()


def is_blank_answer(text) -> bool:
    """Empty, whitespace, an empty JSON list/object/string, or punctuation only."""
    if text is None:
        return True
    if not isinstance(text, str):
        text = json.dumps(text)
    s = text.strip()
    if s in ("", "[]", "{}", '""', "''", "null", "None", "N/A", "n/a"):
        return True
    return not any(ch.isalnum() for ch in s)
