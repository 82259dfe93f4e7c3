"""Human adjudication of Q&A samples: a person votes 1/0 on a sample or flags it with a reason.

A person's vote is a `votes` row like a machine referee's, under the referee name `human:<name>` (raw_text = the
reason, or 'human'), so agreement and consensus figures can include or exclude people by that prefix. A flagged
sample (`sample_flags`) is never selected nor exported while the flag stands. The CLI (`workbench adjudicate`)
and the dashboard's Adjudicate page call these functions; each write is one transaction.

A vote is an upsert stamped `voted_at`; only ok samples are voted on. `resolve_sample` takes a sample id or a
unique prefix of one (at least 4 characters); the reviewer's name defaults to the OS user. The names that tell
people from machines (`HUMAN_PREFIX`, `HUMAN_SQL`, `decided_samples`) live in `stages/referee/people.py`.
"""

from __future__ import annotations

import getpass
import re

import pandas as pd

from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.stages.referee.people import HUMAN_PREFIX, HUMAN_SQL

_BAD_NAME = re.compile(r"[\x00-\x1f\x7f:]")


def reviewer_name(name: str | None = None) -> str:
    """The reviewer's name: as given (stripped), else the OS user."""
    if name is None or not name.strip():
        try:
            name = getpass.getuser()
        except Exception:   # no USER/LOGNAME and no passwd entry (some containers)
            raise WorkbenchError("no reviewer name: pass --reviewer NAME (the OS user could not be read)") from None
    name = name.strip()
    if _BAD_NAME.search(name) or len(name) > 100:
        raise WorkbenchError(f"reviewer name {name!r}: use up to 100 characters without ':' or control characters")
    return name


def human_referee(reviewer: str | None = None) -> str:
    return HUMAN_PREFIX + reviewer_name(reviewer)


def resolve_sample(ws: Workspace, text: str) -> tuple[str, str]:
    """A sample id or a unique prefix of one (>= 4 characters) -> (id, status)."""
    text = (text or "").strip()
    row = ws.store.one("SELECT id, status FROM samples WHERE id = ?", (text,))
    if row is None and len(text) >= 4:
        rows = ws.store.query("SELECT id, status FROM samples WHERE id >= ? AND id < ? LIMIT 2",
                              (text, text + "\U0010ffff"))
        if len(rows) > 1:
            raise WorkbenchError(f"sample {text!r}: more than one sample id starts with it; give more characters")
        row = rows[0] if rows else None
    if row is None:
        raise WorkbenchError(f"sample {text!r}: no such sample (ids are listed by `workbench adjudicate WORKSPACE "
                             "--queue N` and `workbench rejections WORKSPACE`)")
    return row[0], row[1]


def vote(ws: Workspace, sample_id: str, value: int, reviewer: str | None = None, reason: str | None = None) -> str:
    """Record (or replace) this reviewer's vote 1/0 on an ok sample. Returns the referee name written."""
    if value not in (0, 1):
        raise WorkbenchError(f"vote must be 1 (good) or 0 (bad); got {value!r}")
    sid, status = resolve_sample(ws, sample_id)
    if status != "ok":
        raise WorkbenchError(f"sample {sid} was rejected by the Q&A stage; only ok samples are voted on "
                             "(flag it instead to note why it is bad)")
    referee = human_referee(reviewer)
    reason = (reason or "").strip() or "human"
    with ws.store.write() as conn:
        conn.execute(
            "INSERT INTO votes(sample_id, referee, vote, valid, raw_text, voted_at) VALUES (?,?,?,1,?,?) "
            "ON CONFLICT(sample_id, referee) DO UPDATE SET vote=excluded.vote, valid=1, "
            "raw_text=excluded.raw_text, voted_at=excluded.voted_at",
            (sid, referee, int(value), reason, utcnow()))
    return referee


def unvote(ws: Workspace, sample_id: str, reviewer: str | None = None) -> bool:
    """Withdraw this reviewer's vote on a sample; False when there was none."""
    sid, _ = resolve_sample(ws, sample_id)
    with ws.store.write() as conn:
        cur = conn.execute("DELETE FROM votes WHERE sample_id = ? AND referee = ?", (sid, human_referee(reviewer)))
    return cur.rowcount > 0


def flag(ws: Workspace, sample_id: str, reason: str, reviewer: str | None = None) -> str:
    """Set a sample aside with a reason (replaces an earlier flag). Returns the sample id."""
    reason = (reason or "").strip()
    if not reason:
        raise WorkbenchError("a flag needs a reason (--reason TEXT): say what is wrong with the sample")
    sid, _ = resolve_sample(ws, sample_id)
    who = reviewer_name(reviewer)
    with ws.store.write() as conn:
        conn.execute("INSERT INTO sample_flags(sample_id, reason, reviewer, created_at) VALUES (?,?,?,?) "
                     "ON CONFLICT(sample_id) DO UPDATE SET reason=excluded.reason, reviewer=excluded.reviewer, "
                     "created_at=excluded.created_at", (sid, reason, who, utcnow()))
    return sid


def unflag(ws: Workspace, sample_id: str) -> bool:
    """Lift a flag; False when the sample was not flagged."""
    sid, _ = resolve_sample(ws, sample_id)
    with ws.store.write() as conn:
        cur = conn.execute("DELETE FROM sample_flags WHERE sample_id = ?", (sid,))
    return cur.rowcount > 0


def flags(ws: Workspace) -> pd.DataFrame:
    rows = ws.store.query("SELECT sample_id, reason, reviewer, created_at FROM sample_flags ORDER BY created_at")
    return pd.DataFrame([dict(r) for r in rows], columns=["sample_id", "reason", "reviewer", "created_at"])


def human_votes(ws: Workspace) -> pd.DataFrame:
    rows = ws.store.query(f"SELECT sample_id, referee, vote, raw_text AS reason, voted_at FROM votes "
                          f"WHERE {HUMAN_SQL} ORDER BY voted_at")
    return pd.DataFrame([dict(r) for r in rows], columns=["sample_id", "referee", "vote", "reason", "voted_at"])


def sample_votes(ws: Workspace, sample_id: str) -> pd.DataFrame:
    """Every vote on one sample (machine and human), with the raw text each referee gave."""
    rows = ws.store.query("SELECT referee, vote, valid, raw_text FROM votes WHERE sample_id = ? ORDER BY referee",
                          (sample_id,))
    return pd.DataFrame([dict(r) for r in rows], columns=["referee", "vote", "valid", "raw_text"])
