"""Where the files that ship inside the package live (the same from a checkout, an editable install or a wheel)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
DATA_DIR = PACKAGE_DIR / "data"                # seed tasks, reference task lists, coverage synonyms
PROMPTS_DIR = PACKAGE_DIR / "prompts"          # the bundled prompts (a WORKSPACE/prompts/ copy overrides one)
REFERENCE_DIR = DATA_DIR / "reference"
