"""Assertions a test set checks on every output of a trial, each with a pass rate per version.

Specs (strings, so they fit a CLI flag and a JSON column): `non-empty` (the reply parsed and says something),
`regex:PATTERN` (the raw reply matches, case-insensitive), `not-parent` (expansion: no proposed name repeats the
parent's) and `max-chars:N` (the raw reply is at most N characters). A failed call or an unreadable reply fails
every assertion.
"""

from __future__ import annotations

import re
from typing import Any

from workbench.core.errors import WorkbenchError
from workbench.taxonomy.names import name_key

KINDS = ("non-empty", "regex:", "not-parent", "max-chars:")


def check_specs(specs: list[str]) -> None:
    """Refuse an unknown or malformed spec before anything is called."""
    for s in specs:
        if not any(s == k or (k.endswith(":") and s.startswith(k)) for k in KINDS):
            raise WorkbenchError(f"assertion {s!r}: use one of non-empty, regex:PATTERN, not-parent, max-chars:N")
        if s.startswith("regex:"):
            try:
                re.compile(s[6:])
            except re.error as exc:
                raise WorkbenchError(f"assertion {s!r}: not a regular expression ({exc})") from None
        if s.startswith("max-chars:") and not s[10:].isdigit():
            raise WorkbenchError(f"assertion {s!r}: give a whole number, e.g. max-chars:400")


def evaluate(specs: list[str], *, ok: bool, raw: str | None, value: Any, shown: str | None,
             parent: str | None = None) -> dict[str, int]:
    """spec -> 1 (passed) or 0, for one output."""
    out = {}
    for s in specs:
        if not ok:
            out[s] = 0
        elif s == "non-empty":
            out[s] = int(bool((shown or "").strip()) and shown not in ("(no names)", "(no pairs)", "keeps none"))
        elif s.startswith("regex:"):
            out[s] = int(re.search(s[6:], raw or "", re.IGNORECASE) is not None)
        elif s.startswith("max-chars:"):
            out[s] = int(len(raw or "") <= int(s[10:]))
        else:   # not-parent
            names = [p.name for p in getattr(value, "proposals", []) if p.name]
            out[s] = int(parent is None or all(name_key(n) != name_key(parent) for n in names))
    return out
