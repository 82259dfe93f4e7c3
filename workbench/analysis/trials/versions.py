"""Prompt versions for a trial: any number, each a template identified by its content hash, with a name and a
note, stored in `trial_versions` (and its text in `prompt_texts`, as every stage run stores it); diffs between any
two stored versions."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from workbench.analysis.trials.stages import current_prompt
from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.llm.prompt_store import remember, text_of
from workbench.llm.prompts import PromptTemplate

_HASH = re.compile(r"^[0-9a-f]{6,16}$")


@dataclass
class Version:
    template: PromptTemplate
    name: str
    note: str = ""

    @property
    def hash(self) -> str:
        return self.template.hash

    @classmethod
    def of_text(cls, text: str, name: str, note: str = "", *, like: PromptTemplate | None = None) -> Version:
        """A version from text (edited in a notebook or on the Prompts page); `like`: the file it stands for."""
        # Errors name the version as a person typed it, not the file it stands in for.
        label = f"the edited version {name!r}" + (f" (of {like.path.name})" if like is not None else "")
        return cls(PromptTemplate.from_text(text, path=like.path if like is not None else name, label=label), name,
                   note)


def as_version(ws: Workspace, stage: str, v: Version | PromptTemplate | str | Path) -> Version:
    """`current` (what the stage uses now), a stored version's hash (or a unique prefix), a prompt file, a
    PromptTemplate or a Version."""
    if isinstance(v, Version):
        return v
    if isinstance(v, PromptTemplate):
        return Version(v, v.path.name)
    s = str(v)
    if s == "current":
        tpl = current_prompt(ws, stage)
        return Version(tpl, f"current ({tpl.path.name})")
    if _HASH.match(s) and not Path(s).suffix:
        return stored_version(ws, s)
    tpl = PromptTemplate.load(s, workspace_root=ws.root)
    return Version(tpl, Path(s).name)


def stored_version(ws: Workspace, prefix: str) -> Version:
    rows = ws.store.query("SELECT hash, name, note, path, text FROM trial_versions WHERE hash LIKE ? || '%'",
                          (prefix,))
    if not rows:
        text = text_of(ws, prefix)
        if text is not None:
            return Version(PromptTemplate.from_text(text, path=prefix), prefix)
        raise WorkbenchError(f"no stored prompt version {prefix!r}; give a .j2 file, `current`, or a hash from "
                             "`workbench prompts trials WS --show ID`")
    if len(rows) > 1:
        raise WorkbenchError(f"prompt version prefix {prefix!r} is ambiguous ({len(rows)} versions); give more of "
                             "the hash")
    r = rows[0]
    return Version(PromptTemplate.from_text(r["text"], path=r["path"] or r["name"]), r["name"], r["note"] or "")


def store_versions(ws: Workspace, versions: list[Version]) -> None:
    """Each version's name, note and text (a re-used hash keeps its first name unless given a new note)."""
    remember(ws, [v.template for v in versions])
    with ws.store.write() as conn:
        conn.executemany(
            "INSERT INTO trial_versions(hash, name, note, path, text, created_at) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(hash) DO UPDATE SET note=coalesce(nullif(excluded.note,''), trial_versions.note)",
            [(v.hash, v.name, v.note, str(v.template.path), v.template.source, utcnow()) for v in versions])


def diff_versions(ws: Workspace, a: Version | str, b: Version | str, *, context: int = 3) -> str:
    """A unified diff between two versions (stored hashes or Version objects)."""
    va = a if isinstance(a, Version) else stored_version(ws, a)
    vb = b if isinstance(b, Version) else stored_version(ws, b)
    return "\n".join(difflib.unified_diff(va.template.source.splitlines(), vb.template.source.splitlines(),
                                          f"{va.name} ({va.hash[:8]})", f"{vb.name} ({vb.hash[:8]})",
                                          n=context, lineterm=""))
