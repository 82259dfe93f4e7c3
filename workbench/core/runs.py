"""Stage-run records: one API, one status vocabulary, one writer per stage.

    with stage_run(ws, "filter", {"endpoint": "default"}, model="gpt-4o") as run:
        ...                      # run.id tags the rows the stage writes; run.stop("why") ends it as 'stopped'
        run.summary.update(kept=12)

Statuses: `running` while the block runs, then `done`, `stopped` (the stage ended early on purpose: budget,
failure rate), `failed` (an exception), or `interrupted` (Ctrl-C / SIGTERM, or found on a later open with its
process gone after a SIGKILL or a crash). Each run records its host, pid and the process's start time, so a
later `Workspace.open` can tell a live run from a dead one, and a second process that starts the same stage
(same `lock_key`) is refused with a message naming the live run instead of paying for every call twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.store import Store

STATUSES = ("running", "done", "stopped", "failed", "interrupted")
SUMMARY_LIST_MAX = 20   # items of a list kept in stage_runs.summary (the rest: "... and N more")


class _Workspace(Protocol):
    """What these functions use of a `workbench.core.workspace.Workspace` (every Workspace matches it).

    workspace.py imports this module; importing Workspace back, even under TYPE_CHECKING, would be an import
    cycle in core (import-linter's acyclic contract counts TYPE_CHECKING imports), so the type is spelled here."""

    root: Path
    store: Store


class StageBusy(WorkbenchError):
    """Another live process is running the same stage on this workspace."""


@dataclass
class StageRun:
    id: int
    stage: str
    summary: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)   # what the stage recorded (kept, added, ...): summary + report
    stopped: str | None = None          # set by stop(): the run ends as 'stopped' with this reason

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def stop(self, reason: str) -> None:
        self.stopped = self.stopped or reason


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for the run's."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so count from its closing parenthesis.
    rest = stat[stat.rfind(")") + 2:].split()
    return rest[19] if len(rest) > 19 else None


def _alive(pid: int | None, proc_start: str | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass                            # exists, owned by someone else
    except OSError:
        return False
    now = _proc_start(pid)
    return proc_start is None or now is None or now == proc_start


def _is_dead(row, host: str) -> bool:
    """Only runs of this host can be checked; a run with no pid predates these records (its process is gone)."""
    if row["pid"] is None:
        return True
    return row["host"] == host and not _alive(row["pid"], row["proc_start"])


def mark_interrupted(ws: _Workspace) -> list[int]:
    """Mark 'running' runs whose process is gone as 'interrupted'; returns their ids. Cheap when none are."""
    host = socket.gethostname()
    rows = ws.store.query("SELECT id, host, pid, proc_start FROM stage_runs WHERE status='running'")
    dead = [r["id"] for r in rows if _is_dead(r, host)]
    if dead:
        with ws.store.write() as conn:
            conn.executemany(
                "UPDATE stage_runs SET status='interrupted', finished_at=coalesce(finished_at, ?) "
                "WHERE id=? AND status='running'", [(utcnow(), i) for i in dead])
    return dead


def mark_run_interrupted(ws: _Workspace, run_id: int) -> None:
    """By hand, for a run on another host whose process is known to be gone (`workbench runs --interrupted`)."""
    with ws.store.write() as conn:
        row = conn.execute("SELECT status FROM stage_runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise WorkbenchError(f"no stage run with id {run_id}; list them with `workbench runs {ws.root}`")
        if row["status"] != "running":
            raise WorkbenchError(f"stage run {run_id} is already {row['status']}")
        conn.execute("UPDATE stage_runs SET status='interrupted', finished_at=? WHERE id=?", (utcnow(), run_id))


def _busy_message(ws: _Workspace, row) -> str:
    where = f"pid {row['pid']} on {row['host']}" if row["pid"] else "an older workbench"
    return (f"{row['stage']} is already running in {ws.root} (stage run {row['id']}, {where}, started "
            f"{row['started_at']}); wait for it to finish or stop it, then run again. If that process is gone "
            f"(another machine that crashed), mark it with `workbench runs {ws.root} --interrupted {row['id']}`")


def _start(ws: _Workspace, stage: str, params: dict | None, *, prompt_file, prompt_hash, model, lock_key) -> int:
    host, pid = socket.gethostname(), os.getpid()
    with ws.store.write() as conn:
        if lock_key is not None:
            for row in conn.execute("SELECT * FROM stage_runs WHERE status='running' AND lock_key=?", (lock_key,)):
                if _is_dead(row, host):
                    conn.execute("UPDATE stage_runs SET status='interrupted', finished_at=? WHERE id=?",
                                 (utcnow(), row["id"]))
                else:
                    raise StageBusy(_busy_message(ws, row))
        cur = conn.execute(
            "INSERT INTO stage_runs(stage, started_at, status, params, prompt_file, prompt_hash, model, host, pid, "
            "proc_start, lock_key) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
            (stage, utcnow(), json.dumps(params or {}, sort_keys=True, default=str), prompt_file, prompt_hash,
             model, host, pid, _proc_start(pid), lock_key))
        assert cur.lastrowid is not None   # an INSERT sets it
        return int(cur.lastrowid)


def bounded(summary: dict, limit: int = SUMMARY_LIST_MAX) -> dict:
    """The summary as stored: a list longer than `limit` (an embed run's every unreadable image) keeps its first
    `limit` items and a last "... and N more"; counts stay whole, and the full detail is where the stage keeps it
    (e.g. `image_problems`, `llm_calls`) and in the report the stage returned."""
    return {k: (list(v[:limit]) + [f"... and {len(v) - limit} more"]
                if isinstance(v, (list, tuple)) and len(v) > limit else v) for k, v in summary.items()}


def _finish(ws: _Workspace, run_id: int, status: str, summary: dict) -> None:
    with ws.store.write() as conn:
        conn.execute("UPDATE stage_runs SET finished_at=?, status=?, summary=? WHERE id=?",
                     (utcnow(), status, json.dumps(bounded(summary), sort_keys=True, default=str), run_id))


@contextlib.contextmanager
def stage_run(ws: _Workspace, stage: str, params: dict | None = None, *, prompt_file: str | None = None,
              prompt_hash: str | None = None, model: str | None = None,
              lock_key: str | None = "") -> Iterator[StageRun]:
    """A stage-run record for the block. `lock_key` ('' = the stage's name, None = no lock): a second live
    process with the same key is refused (StageBusy) before anything is written."""
    key = stage if lock_key == "" else lock_key
    run = StageRun(_start(ws, stage, params, prompt_file=prompt_file, prompt_hash=prompt_hash, model=model,
                          lock_key=key), stage)
    status = "failed"
    try:
        yield run
        status = "stopped" if run.stopped else "done"
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        status = "interrupted"
        raise
    except BaseException as exc:
        run.summary.setdefault("error", f"{type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        if run.stopped:
            run.summary.setdefault("stopped", run.stopped)
        if run.counts:
            run.summary.setdefault("counts", run.counts)
        _finish(ws, run.id, status, run.summary)


def runs(ws: _Workspace, stage: str | None = None) -> list[dict]:
    sql = "SELECT * FROM stage_runs" + (" WHERE stage=?" if stage else "") + " ORDER BY id DESC"
    return [dict(r) for r in ws.store.query(sql, (stage,) if stage else ())]
