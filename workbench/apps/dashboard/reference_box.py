"""The Gaps page's choice of a reference task list, which never opens an arbitrary server path.

Whoever can reach the dashboard is not necessarily whoever owns the server's files, so the box offers only the
lists shipped with the package, task-list files inside the workspace folder (typed as a path, or found in
`WORKSPACE/references/`), or an upload, which is kept in `WORKSPACE/references/` under a name carrying its
content hash. A typed path is resolved (symlinks, `..`) before it is checked, and a refusal says why without
reading the file or saying whether it exists. The CLI (`workbench taxonomy coverage WS FILE`) still reads any
path: its user owns the shell.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import streamlit as st

from workbench.apps.dashboard.text import md
from workbench.core.errors import WorkbenchError

SUFFIXES = (".txt", ".json", ".jsonl", ".csv")   # the task-list formats taxonomy/io.py reads
FOLDER = "references"                            # WORKSPACE/references/: uploads, and lists put there by hand
TYPED, UPLOAD = "(a file in the workspace…)", "(upload a file…)"


def workspace_references(root: Path) -> list[str]:
    folder = Path(root) / FOLDER
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.iterdir()
                  if p.suffix.lower() in SUFFIXES and not p.name.startswith(".") and p.is_file())


def inside_workspace(root: Path, typed: str) -> Path:
    """The task-list file `typed` names (relative to the workspace, or absolute) if it lies inside the workspace
    folder once symlinks and `..` are resolved; otherwise a WorkbenchError that reads nothing."""
    top = Path(root).resolve()
    p = Path(typed.strip()).expanduser()
    real = (p if p.is_absolute() else top / p).resolve()
    fix = (f"the dashboard opens only the bundled lists, task-list files inside the workspace folder {top}, or an "
           f"upload: copy the file into {top / FOLDER} or upload it (the CLI's `workbench taxonomy coverage` reads "
           "any path)")
    if not real.is_relative_to(top):
        raise WorkbenchError(f"refused: {typed!r} is outside the workspace folder; {fix}")
    if any(part.startswith(".") for part in real.relative_to(top).parts):
        raise WorkbenchError(f"refused: {typed!r} is a hidden file; {fix}")
    if real.suffix.lower() not in SUFFIXES:
        raise WorkbenchError(f"refused: {typed!r} is not a task list (a {', '.join(SUFFIXES)} file); {fix}")
    if not real.is_file():
        raise WorkbenchError(f"{typed!r}: no such file in the workspace folder {top}")
    return real


def save_upload(root: Path, name: str, data: bytes) -> Path:
    """Keep an uploaded list as WORKSPACE/references/<name>-<hash><suffix> (a new content is a new file, so the
    page's cached coverage of an older upload is never shown for it)."""
    base = Path(name).name
    suffix = Path(base).suffix.lower()
    if suffix not in SUFFIXES:
        raise WorkbenchError(f"refused: {base!r} is not a task list (a {', '.join(SUFFIXES)} file)")
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(base).stem).strip("_")[:60] or "reference"
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}{suffix}"
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def reference_box(root: Path, bundled: list[str]) -> str | None:
    """The reference list the person picked (a path the page may read), or None while there is none yet."""
    c1, c2 = st.columns([2, 3])
    options = bundled + workspace_references(root) + [TYPED, UPLOAD]
    pick = c1.selectbox("Reference task list", options, key="gaps_ref",
                        format_func=lambda p: p if p in (TYPED, UPLOAD) else
                        Path(p).name + (" (bundled)" if p in bundled else " (workspace)"))
    if pick == TYPED:
        typed = c2.text_input("Path of a task list inside the workspace folder (one `A~B` path per line, JSON or "
                              "CSV)", key="gaps_ref_file")
        if not typed:
            return None
        try:
            return str(inside_workspace(root, typed))
        except WorkbenchError as exc:
            st.error(md(str(exc)))
            return None
    if pick == UPLOAD:
        up = c2.file_uploader("A task list (one `A~B` path per line, JSON or CSV)", type=[s[1:] for s in SUFFIXES],
                              key="gaps_ref_upload")
        if up is None:
            return None
        try:
            path = save_upload(root, up.name, up.getvalue())
        except WorkbenchError as exc:
            st.error(md(str(exc)))
            return None
        st.caption(f"kept in the workspace as {md(path.relative_to(root))}")
        return str(path)
    return pick
