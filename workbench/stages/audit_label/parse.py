"""Reading the audit label reply: `{"choice": N, "reason": "..."}`, a bare number or "none" (0 = none of the
candidates); anything else is a ParseFailure with its reason."""

from __future__ import annotations

import re

from workbench.core.errors import ParseFailure
from workbench.stages.replies import first_json


def parse_choice(raw: str, k: int) -> dict:
    """{"choice": 0..k, "reason"}; 0 = none of the candidates."""
    text = (raw or "").strip()
    obj = first_json(text)
    if obj is not None:
        if isinstance(obj, dict) and "choice" in obj:
            c = obj["choice"]
            if isinstance(c, str) and c.strip().isdigit():
                c = int(c.strip())
            if c is None or (isinstance(c, str) and c.strip().lower() == "none"):
                c = 0
            if isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= k:
                return {"choice": c, "reason": str(obj.get("reason", ""))[:500]}
            raise ParseFailure(f"choice {c!r} is not a number from 0 to {k}")
    word = re.match(r"\W*(\d+|none)\b", text, re.I)
    if word:
        c = 0 if word.group(1).lower() == "none" else int(word.group(1))
        if 0 <= c <= k:
            return {"choice": c, "reason": text[:500]}
        raise ParseFailure(f"choice {c} is not a number from 0 to {k}")
    raise ParseFailure('no {"choice": N} and no leading number in the reply')
