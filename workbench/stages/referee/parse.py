"""Reading a referee's 0/1 vote. Anything ambiguous is invalid (None), never a 0."""

from __future__ import annotations

import re

_YES = {"yes", "y", "true", "suitable", "pass", "correct", "one"}
_NO = {"no", "n", "false", "unsuitable", "fail", "incorrect", "zero"}
_DIGIT = re.compile(r"(?<![\d.])([01])(?:\.0+)?(?![\d.]*\d)")
_WORD = re.compile(r"[a-z]+")


def parse_vote(raw: str | None) -> int | None:
    """1 or 0 for a clear vote ("1", "Score: 1", "The score is 1", "yes", "0."), else None."""
    if raw is None:
        return None
    text = raw.strip().lower()
    if not text:
        return None
    digits = set(_DIGIT.findall(text))
    other_digits = re.sub(r"(?<![\d.])[01](?:\.0+)?(?![\d.]*\d)", "", text)
    if re.search(r"\d", other_digits):
        return None                       # "10", "2", "0.5": not a 0/1 vote
    words = set(_WORD.findall(text))
    yes, no = bool(words & _YES), bool(words & _NO)
    if len(digits) == 1:
        d = int(next(iter(digits)))
        if (d == 1 and no and not yes) or (d == 0 and yes and not no):
            return None                   # "1 ... no": contradictory
        return d
    if digits:                            # both 0 and 1 mentioned: ambiguous
        return None
    first = _WORD.match(text)
    if first and first.group(0) in _YES and not no:
        return 1
    if first and first.group(0) in _NO and not yes:
        return 0
    if words == words & _YES and yes:
        return 1
    if words == words & _NO and no:
        return 0
    return None
