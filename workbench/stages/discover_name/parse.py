"""Reading the naming reply: a JSON object `{"name": ..., "parent": ..., "reason": ...}` whose name passes the
taxonomy's name check; anything else is a ParseFailure with its reason."""

from __future__ import annotations

from workbench.core.errors import ParseFailure, WorkbenchError
from workbench.stages.replies import first_json
from workbench.taxonomy.names import check_name


def parse_name(raw: str) -> dict:
    text = (raw or "").strip()
    obj = first_json(text)
    if obj is None:
        raise ParseFailure('no JSON object {"name": ..., "parent": ...} in the reply')
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise ParseFailure('the reply has no "name" string')
    try:
        name = check_name(obj["name"])
    except WorkbenchError as exc:
        raise ParseFailure(f"unusable name: {exc}") from None
    parent = obj.get("parent") if isinstance(obj.get("parent"), str) else None
    return {"name": name, "parent": parent, "reason": str(obj.get("reason", ""))[:500]}
