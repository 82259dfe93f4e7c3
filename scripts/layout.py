#!/usr/bin/env python3
"""Print the package layout for ARCHITECTURE.md's "Layout" section: one line per package with its modules.
tests/test_architecture.py checks that the section is this output (regenerate it after moving files).

    python scripts/layout.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "workbench"
DATA = {"data", "prompts"}   # data-only folders: listed without modules


def lines(folder: Path, depth: int = 0) -> list[str]:
    rel = folder.relative_to(ROOT.parent).as_posix() + "/"
    mods = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    name = "  " * depth + (rel if depth == 0 else folder.name + "/")
    if folder.name in DATA:
        files = sorted(p.name for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        out = [f"{name:<22} {len(files)} files: {folder.name} shipped with the package"]
        return out
    out = [f"{name:<22} {' '.join(mods)}".rstrip()]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__"):
        out += lines(sub, depth + 1)
    return out


def layout() -> str:
    return "\n".join(lines(ROOT))


if __name__ == "__main__":
    sys.stdout.write(layout() + "\n")
