"""The workspace database: one SQLite file in WAL mode (ARCHITECTURE.md, "The store").

WAL lets the dashboard read while a notebook or the CLI writes. Each process opens its
own connection; writes go through `Store.write()`, which takes the write lock up front
(BEGIN IMMEDIATE) so two writers queue instead of failing half-way.

The schema is split into components, each with an ordered list of migrations owned by
the package that uses the tables (its `schema.py`: `COMPONENT` + `MIGRATIONS`, or a `COMPONENTS`
dict; registered in SCHEMA_MODULES). A component's version is the number of its migrations applied,
kept in the `meta` table. Opening a workspace migrates forward (after a `workbench.sqlite.bak-*` copy)
or refuses a database written by a newer workbench, a 0-byte file or one that is not SQLite. A migration
whose first line is `-- requires: foreign_keys=off` (a table rebuild) runs in its own transaction with
foreign keys off and must pass `PRAGMA foreign_key_check` before it commits.
"""

from __future__ import annotations

import contextlib
import importlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from workbench.core.errors import SchemaError, sqlite_hint

# Modules that define `COMPONENT: str` and `MIGRATIONS: list[str]` (SQL scripts), or `COMPONENTS: {name: migrations}`.
SCHEMA_MODULES = [
    "workbench.core.schema",
    "workbench.llm.schema",
    "workbench.stages.images.schema",
    "workbench.stages.embed.schema",
    "workbench.stages.schema",
    "workbench.analysis.schema",
    "workbench.review.schema",
]

BUSY_TIMEOUT_MS = 60_000


def registered_schemas() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for mod_name in SCHEMA_MODULES:
        mod = importlib.import_module(mod_name)
        components = getattr(mod, "COMPONENTS", None) or {mod.COMPONENT: mod.MIGRATIONS}
        out.update((name, list(migrations)) for name, migrations in components.items())
    return out


class Store:
    """A connection to one workspace database. Thread-local connections; safe to share."""

    def __init__(self, path: Path, *, create: bool = False, migrate: bool = True):
        self.path = Path(path)
        if not create:
            if not self.path.exists():
                raise SchemaError(
                    f"{self.path}: no workspace database here; run `workbench init {self.path.parent}` first")
            if self.path.is_file() and self.path.stat().st_size == 0:
                raise SchemaError(self._empty_file_message())
        self._local = threading.local()
        try:
            conn = self.conn
            conn.execute("PRAGMA journal_mode=WAL")
            if migrate:
                self._migrate(create=create)
        except sqlite3.DatabaseError as exc:
            self.close()
            text = str(exc)
            if "not a database" in text or "malformed" in text or "unable to open" in text:
                raise SchemaError(self._unreadable_message(text)) from None
            raise
        except BaseException:
            self.close()
            raise

    def _backups(self) -> list[Path]:
        """`workbench.sqlite.bak-*` copies next to the database (written before migrations), newest first."""
        found = [p for p in self.path.parent.glob(self.path.name + ".bak-*") if p.is_file()]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    def _backup_list(self) -> str:
        backups = self._backups()
        names = ", ".join(p.name for p in backups[:5]) + (f" and {len(backups) - 5} more" if len(backups) > 5 else "")
        return names

    def _restore_hint(self) -> str:
        names = self._backup_list()
        if not names:
            return (f"No {self.path.name}.bak-* copy is in {self.path.parent}: restore the file from your own backup, "
                    f"or move it away and run `workbench init {self.path.parent}` to start an empty workspace")
        return (f"Backups in {self.path.parent} (newest first, each from before a schema upgrade): {names}; to use "
                f"one, move {self.path.name} away and copy the backup to {self.path}")

    def _migration_failed(self, comp: str, i: int, current: dict[str, int], exc: sqlite3.Error) -> str:
        """An older workspace whose schema upgrade failed: which one, sqlite's reason, and that nothing changed."""
        from_v = current.get(comp, 0)
        return (f"{self.path}: upgrading this workspace's schema '{comp}' from v{from_v} (migration {i + 1}) failed: "
                f"sqlite: {exc}; that step was rolled back (nothing of it was written). {sqlite_hint(str(exc))}"
                + (f" A copy from before the upgrade: {self._backup_list()}." if self._backups() else ""))

    def _empty_file_message(self) -> str:
        return (f"{self.path}: the workspace database is empty (0 bytes), perhaps truncated by a crash or a failed "
                f"copy; it holds no workspace, and the workbench will not start a new one over it. "
                + self._restore_hint())

    def _unreadable_message(self, sqlite_error: str) -> str:
        if "unable to open" in sqlite_error:
            return (f"{self.path}: cannot open the workspace database ({sqlite_error}); check that it is a file "
                    "and that you may read and write it and its folder")
        return (f"{self.path}: not a SQLite database, or a damaged one (sqlite: {sqlite_error}). "
                + self._restore_hint())

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
        out = {}
        for r in rows:
            try:
                version = int(r["value"])
                if version < 0:
                    raise ValueError(version)
            except (TypeError, ValueError):
                known = len(registered_schemas().get(r["key"][len("schema."):], []))
                names = self._backup_list()
                restore = (f"Restore a backup from {self.path.parent} ({names}), or, if you know how many"
                           if names else "If you know how many")
                raise SchemaError(
                    f"{self.path}: the meta table's {r['key']!r} holds {r['value']!r}, not a schema version "
                    f"(a whole number of migrations applied); the database was edited by hand or damaged. "
                    f"{restore} migrations were applied (this workbench has {known}), repair it with: "
                    f"sqlite3 {self.path} \"UPDATE meta SET value='N' WHERE key='{r['key']}'\"") from None
            out[r["key"][len("schema."):]] = version
        return out

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
        # Migrations run in order, in as few transactions as possible; one that asks for foreign keys off
        # (its first line `-- requires: foreign_keys=off`, a table rebuild) runs in a transaction of its own.
        plan = [(comp, i, needs_fk_off(migrations[i])) for comp, migrations in schemas.items()
                for i in range(current.get(comp, 0), len(migrations))]
        segments: list[list[tuple[str, int, bool]]] = []
        for comp, i, fk_off in plan:
            if fk_off or not segments or segments[-1][-1][2]:
                segments.append([])
            segments[-1].append((comp, i, fk_off))
        for segment in segments:
            fk_off = segment[0][2]
            if fk_off:
                self.conn.execute("PRAGMA foreign_keys=OFF")   # a no-op inside a transaction: set before BEGIN
            try:
                with self.write() as conn:
                    # Re-read inside the lock: another process may have migrated meanwhile.
                    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    now = self.versions()
                    for comp, i, _ in segment:
                        if now.get(comp, 0) != i:
                            continue
                        for stmt in _split_sql(schemas[comp][i]):
                            try:
                                conn.execute(stmt)
                            except sqlite3.Error as exc:   # rolled back: say which upgrade failed and why
                                raise SchemaError(self._migration_failed(comp, i, current, exc)) from None
                        if fk_off:
                            bad = conn.execute("PRAGMA foreign_key_check").fetchall()
                            if bad:
                                raise SchemaError(
                                    f"{self.path}: schema '{comp}' migration {i + 1} would leave {len(bad)} broken "
                                    f"reference(s) (e.g. table {bad[0][0]} row {bad[0][1]} -> {bad[0][2]}); "
                                    "nothing was changed. Repair or remove those rows (sqlite3 "
                                    f"{self.path} 'PRAGMA foreign_key_check') and open the workspace again")
                        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                     (f"schema.{comp}", str(i + 1)))
                        now[comp] = i + 1
            finally:
                if fk_off:
                    self.conn.execute("PRAGMA foreign_keys=ON")


FK_OFF_MARK = "-- requires: foreign_keys=off"


def needs_fk_off(script: str) -> bool:
    """A migration whose first line is `-- requires: foreign_keys=off` (SQLite's table-rebuild procedure)."""
    return script.lstrip().startswith(FK_OFF_MARK)


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (executescript would commit our transaction).

    Cuts after each `;` that ends a complete statement (SQLite's own tokenizer decides, so a `;`
    inside a string, a comment or a trigger body does not cut); a comment after a `;` goes with
    the next statement, and a trailing comment-only piece is dropped.
    """
    out, start = [], 0
    for i, ch in enumerate(script):
        if ch == ";" and sqlite3.complete_statement(script[start:i + 1]):
            out.append(script[start:i + 1].strip())
            start = i + 1
    rest = script[start:]
    if any(line.strip() and not line.strip().startswith("--") for line in rest.splitlines()):
        out.append(rest.strip())
    return [stmt for stmt in out if stmt]
