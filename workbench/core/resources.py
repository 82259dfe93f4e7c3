"""Where the files that ship inside the package live (the same from a checkout, an editable install or a wheel)."""

from __future__ import annotations

from pathlib import Path

from workbench.core.errors import WorkbenchError

PACKAGE_DIR = Path(__file__).resolve().parents[1]
DATA_DIR = PACKAGE_DIR / "data"                # seed tasks, reference task lists, coverage synonyms
PROMPTS_DIR = PACKAGE_DIR / "prompts"          # the bundled prompts (a WORKSPACE/prompts/ copy overrides one)
REFERENCE_DIR = DATA_DIR / "reference"


def bundled_reference_names() -> list[str]:
    """The reference task lists shipped with the package, by file stem (`mmbench_abilities`, ...)."""
    return sorted(p.stem for p in REFERENCE_DIR.glob("*.txt"))


def reference_file(text: str | Path) -> Path:
    """A reference list a person named: an existing path, else a bundled list by its stem or a unique prefix of it
    (`mmbench` -> mmbench_abilities.txt). A name that is neither is an error listing the bundled ones."""
    path = Path(text).expanduser()
    if path.exists():
        return path
    stem = str(text).strip().lower().removesuffix(".txt")
    names = bundled_reference_names()
    hits = [n for n in names if n == stem] or [n for n in names if n.startswith(stem)] if stem else []
    if len(hits) == 1:
        return REFERENCE_DIR / f"{hits[0]}.txt"
    if len(hits) > 1:
        raise WorkbenchError(f"{text}: names more than one bundled reference list ({', '.join(hits)}); give more "
                             "of the name")
    raise WorkbenchError(f"{text}: no such file or folder, nor a bundled reference list (bundled: "
                         f"{', '.join(names)})")
