"""The workspace database: one SQLite file in WAL mode (DESIGN.md, "The workspace").

WAL lets the dashboard read while a notebook or the CLI writes. Each process opens its
own connection; writes go through `Store.write()`, which takes the write lock up front
(BEGIN IMMEDIATE) so two writers queue instead of failing half-way.

The schema is split into components, each with an ordered list of migrations owned by
the module that uses the tables (`workbench/<area>/schema.py`, registered in
SCHEMA_MODULES). A component's version is the number of its migrations applied, kept in
the `meta` table. Opening a workspace migrates forward (after a backup copy) or refuses a
database written by a newer workbench.
"""

from __future__ import annotations

import contextlib
import importlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

from workbench.errors import SchemaError

# Modules that define `COMPONENT: str` and `MIGRATIONS: list[str]` (SQL scripts).
SCHEMA_MODULES = [
    "workbench.core_schema",
    "workbench.llm.schema",
    "workbench.stages.images_schema",
    "workbench.stages.clip_schema",
    "workbench.stages.vision_schema",
    "workbench.analysis.schema",
]

BUSY_TIMEOUT_MS = 60_000


def registered_schemas() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for mod_name in SCHEMA_MODULES:
        mod = importlib.import_module(mod_name)
        out[mod.COMPONENT] = list(mod.MIGRATIONS)
    return out


class Store:
    """A connection to one workspace database. Thread-local connections; safe to share."""

    def __init__(self, path: Path, *, create: bool = False, migrate: bool = True):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise SchemaError(f"{self.path}: no workspace database here; run `workbench init {self.path.parent}` first")
        self._local = threading.local()
        conn = self.conn
        conn.execute("PRAGMA journal_mode=WAL")
        if migrate:
            self._migrate(create=create)

    # -- connections -------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL, much faster commits
            self._local.conn = conn
            self._local.depth = 0
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all or nothing. Nested calls join the outer transaction."""
        conn = self.conn
        if self._local.depth:
            self._local.depth += 1
            try:
                yield conn
            finally:
                self._local.depth -= 1
            return
        self._begin_immediate(conn, self.path)
        self._local.depth = 1
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
        finally:
            self._local.depth = 0

    @staticmethod
    def _begin_immediate(conn: sqlite3.Connection, path: Path) -> None:
        # busy_timeout covers most waits; retry covers the rare SQLITE_BUSY on lock upgrade.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise SchemaError(
                        f"{path}: the workspace database is locked by another process for over "
                        f"{BUSY_TIMEOUT_MS // 1000}s; close other writers and retry") from exc
                time.sleep(0.05)

    def query(self, sql: str, params=()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def one(self, sql: str, params=()):
        return self.conn.execute(sql, params).fetchone()

    def scalar(self, sql: str, params=()):
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    # -- schema ------------------------------------------------------------------------------
    def versions(self) -> dict[str, int]:
        has_meta = self.scalar("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='meta'")
        if not has_meta:
            return {}
        rows = self.query("SELECT key, value FROM meta WHERE key LIKE 'schema.%'")
        return {r["key"][len("schema."):]: int(r["value"]) for r in rows}

    def _migrate(self, *, create: bool) -> None:
        schemas = registered_schemas()
        current = self.versions()
        for comp, version in current.items():
            known = len(schemas.get(comp, []))
            if version > known:
                raise SchemaError(
                    f"{self.path}: this workspace uses schema '{comp}' v{version} but this workbench knows only "
                    f"v{known}; upgrade the workbench (pip install -U taskgalaxy-workbench) to open it")
        pending = {c: m[current.get(c, 0):] for c, m in schemas.items() if len(m) > current.get(c, 0)}
        if not pending:
            return
        if current and not create:
            # Existing data: keep a copy from before the migration.
            backup = self.path.with_name(
                self.path.name + ".bak-" + "-".join(f"{c}{current.get(c, 0)}" for c in sorted(pending)))
            if not backup.exists():
                with sqlite3.connect(backup) as dst:
                    self.conn.backup(dst)
        with self.write() as conn:
            # Re-read inside the lock: another process may have migrated meanwhile.
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            now = self.versions()
            for comp, migrations in schemas.items():
                for i in range(now.get(comp, 0), len(migrations)):
                    for stmt in _split_sql(migrations[i]):
                        conn.execute(stmt)
                    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                 (f"schema.{comp}", str(i + 1)))


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (executescript would commit our transaction)."""
    out, buf = [], []
    for line in script.splitlines():
        buf.append(line)
        candidate = "\n".join(buf).strip()
        if candidate.endswith(";") and sqlite3.complete_statement(candidate):
            out.append(candidate)
            buf = []
    rest = "\n".join(buf).strip()
    if rest:
        out.append(rest)
    return out

