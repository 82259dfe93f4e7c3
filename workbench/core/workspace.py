"""A workspace: one folder is one taxonomy project (ARCHITECTURE.md, "The store").

    workbench.toml     configuration
    workbench.sqlite   all state (WAL)
    arrays/            embeddings and projections (.npy; row order recorded in the database)
    exports/           what users hand to training
    prompts/           prompt files this workspace uses (copies the user can edit)
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from workbench.core.clock import utcnow
from workbench.core.config import CONFIG_NAME, DEFAULT_CONFIG_TOML, Config, load_config, toml_literal
from workbench.core.errors import WorkbenchError
from workbench.core.runs import StageRun, mark_interrupted, runs, stage_run
from workbench.core.store import Store

DB_NAME = "workbench.sqlite"
# In `meta` once a workspace has been told (or, made since, needs no telling) that proposals are not task types
# until accepted (`taxonomy.model.first_open_notice`).
PROPOSALS_NOTICE_KEY = "notice.proposals_not_task_types"
FOLDERS = ("arrays", "exports", "prompts")


class Workspace:
    def __init__(self, root: Path, store: Store, config: Config):
        self.root = Path(root)
        self.store = store
        self.config = config

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def init(cls, root: Path | str, *, name: str | None = None, exist_ok: bool = False) -> Workspace:
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise WorkbenchError(f"{root}: exists and is not a folder; choose another path")
        if (root / DB_NAME).exists():
            if exist_ok:
                return cls.open(root)
            raise WorkbenchError(f"{root}: already a workspace; open it instead, or choose an empty folder")
        root.mkdir(parents=True, exist_ok=True)
        for sub in FOLDERS:
            (root / sub).mkdir(exist_ok=True)
        cfg_path = root / CONFIG_NAME
        if not cfg_path.exists():
            ws_name = toml_literal(name or root.resolve().name or "taxonomy")   # a quote or backslash is escaped
            cfg_path.write_text(DEFAULT_CONFIG_TOML.format(name=ws_name), encoding="utf-8")
        config = load_config(cfg_path)
        store = Store(root / DB_NAME, create=True)
        with store.write() as conn:   # born under the rule: no first-open notice about it
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (PROPOSALS_NOTICE_KEY, utcnow()))
        return cls(root, store, config)

    @classmethod
    def open(cls, root: Path | str) -> Workspace:
        root = Path(root)
        if not root.is_dir():
            raise WorkbenchError(f"{root}: no such workspace folder; create one with `workbench init {root}`")
        if not (root / DB_NAME).exists():
            raise WorkbenchError(
                f"{root}: not a workspace (no {DB_NAME}); create one with `workbench init {root}`")
        config = load_config(root / CONFIG_NAME)
        store = Store(root / DB_NAME)
        for sub in FOLDERS:
            (root / sub).mkdir(exist_ok=True)
        ws = cls(root, store, config)

        mark_interrupted(ws)   # runs whose process died (SIGKILL, crash) stop looking 'running'
        return ws

    def reload_config(self) -> Config:
        self.config = load_config(self.root / CONFIG_NAME)
        return self.config

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths -------------------------------------------------------------------------------
    @property
    def arrays_dir(self) -> Path:
        return self.root / "arrays"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def prompts_dir(self) -> Path:
        return self.root / "prompts"

    # -- stage runs (core/runs.py) ------------------------------------------------------
    def stage_run(self, stage: str, params: dict | None = None,
                  **kw: Any) -> contextlib.AbstractContextManager[StageRun]:
        """A stage-run record for a `with` block; see `workbench.core.runs.stage_run`."""
        return stage_run(self, stage, params, **kw)

    def runs(self, stage: str | None = None) -> list[dict]:
        return runs(self, stage)
