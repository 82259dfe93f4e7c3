"""Reading the filter VLM's reply: which of the image's candidate task types fit.

Only candidates can be kept. A returned label is matched to a candidate by its full `~` path or by its
last level (case-insensitive, normalised); a label that matches no candidate is rejected with that
reason; "none" (an empty list, "none", "no label fits") is a valid answer, not a failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from workbench.core.errors import ParseFailure
from workbench.stages.replies import clean_line, first_json, strip_fences
from workbench.taxonomy.names import SEP, name_key, replace_lookalikes

_NONE = re.compile(r"^\W*(none|no(ne)? (of (them|the labels)|labels?)( fits?| apply| applies)?|nothing|n/?a|\[\])\W*$",
                   re.IGNORECASE)


class FilterParseError(ParseFailure):
    """The reply could not be read as a list of labels."""


@dataclass
class FilterResult:
    kept: list[str] = field(default_factory=list)             # candidate paths, in candidate order
    not_candidates: list[str] = field(default_factory=list)   # labels returned that are not candidates
    ambiguous: list[str] = field(default_factory=list)        # a last level shared by several candidates
    none: bool = False                                        # the model said no label fits


def _key(label: str) -> str:
    text, _ = replace_lookalikes(label)
    return SEP.join(name_key(p) for p in text.split(SEP))


def parse_filter_reply(raw: str, candidates: list[str]) -> FilterResult:
    by_full = {_key(c): c for c in candidates}
    by_leaf: dict[str, list[str]] = {}
    for c in candidates:
        by_leaf.setdefault(_key(c.split(SEP)[-1]), []).append(c)

    value = first_json(raw)
    if isinstance(value, dict):
        for k in ("labels", "task_types", "selected", "kept", "answer"):
            if isinstance(value.get(k), list):
                value = value[k]
                break
    labels: list[str]
    if isinstance(value, list):
        labels = [str(x.get("label") or x.get("task_type") or "") if isinstance(x, dict) else str(x) for x in value]
        labels = [clean_line(x) for x in labels if str(x).strip()]
    else:
        body = strip_fences(raw).strip()
        if not body:
            raise FilterParseError("empty reply")
        if _NONE.match(body):
            return FilterResult(none=True)
        lines = [clean_line(x) for x in body.splitlines()]
        lines = [x for x in lines if x]
        if len(lines) == 1 and _key(lines[0]) not in by_full and ("," in lines[0] or ";" in lines[0]):
            lines = [clean_line(x) for x in re.split(r"[;,]", lines[0]) if clean_line(x)]
        labels = lines
    result = FilterResult()
    kept = set()
    for label in labels:
        if _NONE.match(label):
            continue
        k = _key(label)
        match = by_full.get(k)
        if match is None and len(by_leaf.get(k, [])) == 1:
            match = by_leaf[k][0]
        if match is None and len(by_leaf.get(k, [])) > 1:
            result.ambiguous.append(label)
        elif match is None:
            result.not_candidates.append(label)
        else:
            kept.add(match)
    result.kept = [c for c in candidates if c in kept]
    result.none = not result.kept and not result.not_candidates and not result.ambiguous
    return result
