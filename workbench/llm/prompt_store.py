"""The prompt-text store: each template's text kept once by hash (`prompt_texts`), written when an LLM stage
run starts, so any past version can be read back, diffed and credited with the calls that used it."""

from __future__ import annotations

from collections.abc import Iterable

from workbench.core.clock import utcnow
from workbench.core.workspace import Workspace
from workbench.llm.prompts import PromptTemplate


def remember(ws: Workspace, prompts: Iterable[PromptTemplate]) -> None:
    """Store each template's text once (first sighting wins); called when a stage run starts."""
    rows = [(p.hash, p.path.name, p.display_path, p.source, utcnow()) for p in prompts if p is not None]
    if rows:
        with ws.store.write() as conn:
            conn.executemany("INSERT OR IGNORE INTO prompt_texts(hash, name, path, text, first_seen) "
                             "VALUES (?, ?, ?, ?, ?)", rows)


def text_of(ws: Workspace, prompt_hash: str) -> str | None:
    return ws.store.scalar("SELECT text FROM prompt_texts WHERE hash=?", (prompt_hash,))


def names(ws: Workspace) -> list[str]:
    return [r[0] for r in ws.store.query("SELECT DISTINCT name FROM prompt_texts ORDER BY name")]
