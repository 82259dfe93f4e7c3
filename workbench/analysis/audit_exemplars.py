"""Typical instructions per task type (`data/audit_exemplars.txt`, and the workspace's own
`audit_exemplars.txt`), which `workbench audit` matches an item's text against beside the task types' names.

A file holds `[heading]` lines (a taxonomy path "a~b~c" or a first-level name) each followed by example
instructions, one a line; `#` starts a comment. An example counts for every task type at or under its
heading; headings that name no node of the taxonomy are ignored (and counted), so the packaged examples of
the seed taxonomy do no harm to another one. The workspace's file is read after the packaged one and adds to it.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from workbench.core.errors import WorkbenchError
from workbench.taxonomy.names import SEP

FILE = "audit_exemplars.txt"


def parse(text: str, where: str) -> dict[str, list[str]]:
    """{heading: [examples]}; a line before any heading is refused with its line number."""
    out: dict[str, list[str]] = {}
    head = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            head = line[1:-1].strip()
            out.setdefault(head, [])
        elif head is None:
            raise WorkbenchError(f"{where}: line {n}: an example before any [heading]; put a [task type path] "
                                 "line above it")
        else:
            out[head].append(line)
    return out


def load(root: Path | None) -> dict[str, list[str]]:
    """The packaged examples, then the workspace's own (root/audit_exemplars.txt) where it has one."""
    pkg = resources.files("workbench") / "data" / FILE
    out = parse(pkg.read_text(encoding="utf-8"), f"workbench/data/{FILE}")
    own = Path(root) / FILE if root is not None else None
    if own is not None and own.is_file():
        for head, lines in parse(own.read_text(encoding="utf-8"), str(own)).items():
            out.setdefault(head, []).extend(lines)
    return out


def groups(examples: dict[str, list[str]], idx, leaves: list[str]) -> tuple[list[str], list[list[int]], list[int]]:
    """(the examples' texts, per example group the task-type columns it counts for, each text's group) for
    the headings that name a node of `idx` (matched by path, else by a unique name)."""
    by_path = {p.lower(): nid for nid, p in idx.paths.items()}
    by_name: dict[str, list[str]] = {}
    for nid, node in idx.nodes.items():
        by_name.setdefault(node.name.lower(), []).append(nid)
    col = {nid: j for j, nid in enumerate(leaves)}
    texts, cols, owner = [], [], []
    for head, lines in examples.items():
        key = head.lower()
        nid = by_path.get(key) or (by_name[key][0] if len(by_name.get(key, [])) == 1 else None)
        if nid is None or not lines:
            continue
        prefix = idx.paths[nid].lower()
        mine = [col[lf] for lf in leaves if idx.paths[lf].lower() == prefix
                or idx.paths[lf].lower().startswith(prefix + SEP)]
        if not mine:
            continue
        cols.append(mine)
        texts.extend(lines)
        owner.extend([len(cols) - 1] * len(lines))
    return texts, cols, owner


def digest(examples: dict[str, list[str]]) -> str:
    return hashlib.sha256(repr(sorted(examples.items())).encode()).hexdigest()[:12]
