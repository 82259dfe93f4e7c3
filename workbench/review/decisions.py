"""Reviewing proposed nodes: what is pending, and applying a curator's decisions (no widget imports).

    pending = pending_proposals(ws, stage_run_id=3)          # every node still 'proposed' (a DataFrame)
    results = apply_decisions(ws, [Decision("t0123456789ab", "accept"),
                                   Decision("t1111111111aa", "rename", new_name="Chart reading")])
    [r.outcome for r in results]     # 'applied', 'skipped (keep)', 'unchanged (already accepted)', 'failed: ...'
    bulk_status(ws, select_proposals(ws, under="Vision", stage_run_id=3), "accepted", reviewer="pat")
    undo(ws)                         # reverses the last batch of decisions (status, name, parent back)
    review_log(ws)                   # who, when, what, the value before and after (a DataFrame, newest first)

Actions:
- `keep`: leave the node as it is (decide later); reported as 'skipped (keep)'.
- `accept` / `reject`: set the status. `accept` with a `new_name` renames first and accepts under the new name
  (both or neither). A `new_name` given with `reject` is not applied; the result says so.
- `rename`: rename only; the status stays what it is (a proposal stays pending).
- `move` (`new_parent`: id or `~` path, '' = first level) and `merge` (`into`: the survivor) — the dashboard's;
  the notebook table offers the first four (`ACTIONS`).

Every change is logged in `review_log` (review/schema.py) in the same transaction as the change: reviewer (default
the OS user), time, source, action, the value before and after. One call (`apply_decisions`, `bulk_status`) is one
*batch*; `undo(ws, n)` reverses the last n batches, newest change first, in one transaction, and refuses (changing
nothing) when a node changed since outside the log or when a batch holds a merge (`Taxonomy.merge` moves children
and re-points attached rows without recording where they were, so it cannot be reversed exactly).

Each decision is its own write transaction, so a failed one (a name that clashes with a sibling, a node deleted
or merged away meanwhile, a bad name) leaves the others applied. Applying is idempotent: a decision whose effect
is already in the workspace writes nothing (not even `updated_at`) and is reported as 'unchanged (...)'.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from workbench.core.clock import utcnow
from workbench.core.errors import WorkbenchError
from workbench.core.workspace import Workspace
from workbench.review.adjudication import reviewer_name
from workbench.taxonomy.model import Taxonomy
from workbench.taxonomy.names import SEP, normalize_name

# What the notebook table offers; the dashboard adds move and merge.
ACTIONS = ("keep", "accept", "reject", "rename")
ALL_ACTIONS = ACTIONS + ("move", "merge")
SOURCES = ("dashboard", "cli", "notebook", "library")
ORIGINS = ("generated", "discovered", "reference", "imported", "seed", "manual")
LOG_COLUMNS = ["id", "batch", "at", "reviewer", "source", "action", "node_id", "path", "old_value", "new_value",
               "undone_at", "undone_by"]
# The kinds of result, in the order the review table counts them.
STATUSES = ("applied", "unchanged", "skipped", "failed")

PENDING_COLUMNS = ["node_id", "name", "path", "parent_id", "parent_path", "level", "origin", "stage_run_id",
                   "stage", "prompt_hash", "prompt_file", "model", "created_at", "under_rejected"]


@dataclass(frozen=True)
class Decision:
    """What a curator decided for one proposed node."""

    node_id: str
    action: str = "keep"
    new_name: str | None = None
    new_parent: str | None = None    # move: id or `~` path of the new parent; '' = first level
    into: str | None = None          # merge: the survivor (id or `~` path); this node disappears into it
    # The node's status when the person decided (the review page and widgets: 'proposed'). If someone else changed
    # it since (now neither this nor what the decision sets), the decision is skipped, naming who did it.
    expect: str | None = None

    def __post_init__(self):
        if self.action not in ALL_ACTIONS:
            raise WorkbenchError(f"review action must be one of {', '.join(ALL_ACTIONS)}; got {self.action!r}")
        # A blank rename box means "no new name".
        if self.new_name is not None and not self.new_name.strip():
            object.__setattr__(self, "new_name", None)


@dataclass(frozen=True)
class DecisionResult:
    """What applying one decision did. `status` is one of STATUSES; `outcome` is the one-line report."""

    decision: Decision
    status: str
    detail: str = ""            # 'keep', 'already accepted', the failure reason, or what was done
    path: str | None = None     # the node's `~` path after the decision (None: the node is gone)

    node_id = property(lambda self: self.decision.node_id)
    action = property(lambda self: self.decision.action)
    new_name = property(lambda self: self.decision.new_name)

    @property
    def outcome(self) -> str:
        if self.status == "applied":
            return "applied"
        if self.status == "failed":
            return f"failed: {self.detail}"
        return f"{self.status} ({self.detail})"

    def as_dict(self) -> dict:
        return {"node_id": self.node_id, "path": self.path, "action": self.action, "new_name": self.new_name,
                "outcome": self.outcome, "detail": self.detail}


# -- what is pending ------------------------------------------------------------------------------
def pending_proposals(ws: Workspace, *, stage_run_id: int | None = None, prompt_hash: str | None = None,
                      parent: str | None = None):
    """Every node still `proposed`, from every stage run, as a pandas DataFrame (PENDING_COLUMNS).

    Filters: `stage_run_id` (the run that proposed the node), `prompt_hash` (a full hash or a prefix of one),
    `parent` (id or `~` path: only its direct children). Rows come newest stage run first (nodes proposed by no
    stage run, e.g. added by hand as 'proposed', last), in tree order within a run. `under_rejected` marks a
    proposal hidden from the taxonomy because an ancestor is rejected.
    """
    import pandas as pd

    conds, params = ["n.status = 'proposed'"], []
    if stage_run_id is not None:
        conds.append("n.stage_run_id = ?")
        params.append(int(stage_run_id))
    if prompt_hash is not None:
        conds.append("substr(n.prompt_hash, 1, ?) = ?")
        params.extend([len(prompt_hash), prompt_hash])
    if parent is not None:
        conds.append("n.parent_id = ?")
        params.append(Taxonomy.of(ws).resolve(parent).id)
    rows = ws.store.query(
        "SELECT n.id AS node_id, n.name, n.parent_id, n.level, n.origin, n.stage_run_id, r.stage, n.prompt_hash,"
        " n.prompt_file, n.model, n.created_at FROM nodes n LEFT JOIN stage_runs r ON r.id = n.stage_run_id"
        f" WHERE {' AND '.join(conds)}", params)
    cols = [c for c in PENDING_COLUMNS if c not in ("path", "parent_path", "under_rejected")]
    if not rows:
        return pd.DataFrame(columns=PENDING_COLUMNS).astype({"stage_run_id": "Int64", "level": "int64",
                                                             "under_rejected": "bool"})
    rows = [tuple(r) for r in rows]
    # Paths, tree order and hidden-ness from the proposals' ancestor chains only (not the whole tree: at 25k nodes
    # that read took seconds, this one a tenth of that).
    node_ids = [r[0] for r in rows]
    chains = _chains(ws.store, node_ids)
    out = pd.DataFrame.from_records(rows, columns=cols)
    out["path"] = [SEP.join(chains[n]["names"]) for n in node_ids]
    out["parent_path"] = [SEP.join(chains[n]["names"][:-1]) if r[2] is not None else None
                          for n, r in zip(node_ids, rows)]
    out["under_rejected"] = [chains[n]["hidden"] for n in node_ids]
    out["stage_run_id"] = out["stage_run_id"].astype("Int64")
    run_key = [-r[5] if r[5] is not None else 1 for r in rows]   # newest run first, no run last
    order = sorted(range(len(out)), key=lambda i: (run_key[i], chains[node_ids[i]]["order"]))
    out = out.iloc[order]
    return out[PENDING_COLUMNS].reset_index(drop=True)


# -- applying decisions ---------------------------------------------------------------------------
def apply_decisions(ws: Workspace, decisions: Iterable[Decision], *, reviewer: str | None = None,
                    source: str = "library") -> list[DecisionResult]:
    """Apply each decision in its own transaction through the `Taxonomy` API; one result per decision.

    Every change is logged (who: `reviewer`, default the OS user) in the same transaction; the whole call is one
    batch for `undo`."""
    log = _Log(ws, reviewer, source)
    return [_apply_one(ws, d, log) for d in decisions]


class _Log:
    """Writes `review_log` rows for one batch (its number is taken by the first row, inside its transaction)."""

    def __init__(self, ws: Workspace, reviewer: str | None, source: str):
        if source not in SOURCES:
            raise WorkbenchError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
        self.ws, self.reviewer, self.source, self.batch = ws, reviewer_name(reviewer), source, None

    def __call__(self, conn, action: str, node_id: str, path: str | None, old, new) -> None:
        self.many(conn, [(action, node_id, path, old, new)])

    def many(self, conn, rows) -> None:
        if not rows:
            return
        if self.batch is None:
            self.batch = conn.execute("SELECT coalesce(max(batch), 0) + 1 FROM review_log").fetchone()[0]
        now = utcnow()
        conn.executemany(
            "INSERT INTO review_log(batch, at, reviewer, source, action, node_id, path, old_value, new_value)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            [(self.batch, now, self.reviewer, self.source, a, nid, path, old, new) for a, nid, path, old, new in rows])


def _apply_one(ws: Workspace, d: Decision, log: _Log) -> DecisionResult:
    if d.action == "keep":
        return DecisionResult(d, "skipped", "keep", _path_or_none(ws, d.node_id))
    try:
        with ws.store.write() as conn:
            status, detail = _apply_in_transaction(ws, conn, d, log)
            if status == "failed" or d.action == "merge":
                path = _path_or_none(ws, d.node_id)
            else:
                path = Taxonomy.of(ws).path(d.node_id)
    except (WorkbenchError, sqlite3.Error) as exc:
        return DecisionResult(d, "failed", str(exc), _path_or_none(ws, d.node_id))
    return DecisionResult(d, status, detail, path)


def _apply_in_transaction(ws: Workspace, conn, d: Decision, log: _Log) -> tuple[str, str]:
    tax = Taxonomy.of(ws)
    row = conn.execute("SELECT name, status, parent_id FROM nodes WHERE id=?", (d.node_id,)).fetchone()
    if row is None:
        # Not `tax.get`: that follows a merge alias, and a decision about the victim is not one about the survivor.
        survivor = conn.execute("SELECT node_id FROM node_aliases WHERE old_id=?", (d.node_id,)).fetchone()
        if survivor is not None:
            return "failed", (f"node {d.node_id} was merged into {tax.path(survivor[0])!r} ({survivor[0]}) "
                              "meanwhile; review that node instead")
        return "failed", f"node {d.node_id} no longer exists (deleted meanwhile)"
    name, status = row["name"], row["status"]
    path = tax.path(d.node_id)
    if d.expect is not None and status not in (d.expect, TARGET_STATUS.get(d.action, d.expect)):
        return "skipped", _decided_meanwhile(conn, d.node_id, status)
    new_name = d.new_name
    renames = new_name is not None and normalize_name(new_name) != name

    if d.action == "move":
        if d.new_parent is None:
            return "failed", "move needs a new parent ('' for the first level)"
        pid = tax.resolve(d.new_parent).id if d.new_parent.strip() else None
        if pid == row["parent_id"]:
            return "unchanged", f"already under {tax.path(pid)!r}" if pid else "already at the first level"
        tax.move(d.node_id, pid)
        log(conn, "move", d.node_id, path, row["parent_id"] or "", pid or "")
        return "applied", f"moved under {tax.path(pid)!r}" if pid else "moved to the first level"

    if d.action == "merge":
        if not d.into or not d.into.strip():
            return "failed", "merge needs the node to merge into"
        survivor = tax.resolve(d.into)
        if conn.execute("SELECT 1 FROM nodes WHERE id=?", (survivor.id,)).fetchone() is None:
            return "failed", f"{d.into} no longer exists"
        survivor_path = tax.path(survivor.id)
        tax.merge(d.node_id, survivor.id)
        log(conn, "merge", d.node_id, path, path, survivor.id)
        return "applied", f"merged into {survivor_path!r}"

    if d.action == "rename":
        if new_name is None:
            return "failed", "rename needs a new name"
        if not renames:
            return "unchanged", f"already named {name!r}"
        new = tax.rename(d.node_id, new_name).name
        log(conn, "rename", d.node_id, path, name, new)
        return "applied", f"renamed to {new!r}"

    if d.action == "accept":
        if not renames and status == "accepted":
            return "unchanged", "already accepted"
        done = []
        if renames:
            new = tax.rename(d.node_id, new_name).name     # a clash raises: the accept below is not applied either
            log(conn, "rename", d.node_id, path, name, new)
            done.append(f"renamed to {new!r}")
        if status != "accepted":
            tax.accept([d.node_id])
            log(conn, "accept", d.node_id, path, status, "accepted")
            done.append("accepted")
        return "applied", " and ".join(done)

    # reject
    ignored = "; the new name was not applied (a rejected node keeps its name)" if renames else ""
    if status == "rejected":
        return "unchanged", "already rejected" + ignored
    tax.reject([d.node_id])
    log(conn, "reject", d.node_id, path, status, "rejected")
    return "applied", "rejected" + ignored


TARGET_STATUS = {"accept": "accepted", "reject": "rejected"}


def _decided_meanwhile(conn, node_id: str, status: str) -> str:
    last = conn.execute("SELECT reviewer, at FROM review_log WHERE node_id=? AND new_value=? AND undone_at IS NULL "
                        "ORDER BY id DESC LIMIT 1", (node_id, status)).fetchone()
    who = f" by {last[0]} at {last[1][:16].replace('T', ' ')}" if last else ""
    return f"{status} meanwhile{who}; left as decided (undo that first to decide again)"


# -- bulk ----------------------------------------------------------------------------------------
def select_proposals(ws: Workspace, *, under: str | None = None, stage_run_id: int | None = None,
                     origin: str | None = None, include_hidden: bool = False) -> list[str]:
    """Ids of the pending proposals in a whole subtree (`under`: id or `~` path, the node itself included), from
    one stage run, of one origin; all filters combine. Proposals hidden under a rejected ancestor are left out
    unless `include_hidden` (or `under` names a node inside the hidden part)."""
    if origin is not None and origin not in ORIGINS:
        raise WorkbenchError(f"origin must be one of {', '.join(ORIGINS)}; got {origin!r}")
    df = pending_proposals(ws, stage_run_id=stage_run_id)
    if origin is not None:
        df = df[df.origin == origin]
    if under is not None:
        top = Taxonomy.of(ws).resolve(under)
        inside = {r[0] for r in ws.store.query(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id)"
            " SELECT id FROM sub", (top.id,))}
        df = df[df.node_id.isin(inside)]
        include_hidden = include_hidden or top.status == "rejected" or _hidden(ws, top.id)
    if not include_hidden:
        df = df[~df.under_rejected]
    return list(df.node_id)


def _hidden(ws: Workspace, node_id: str) -> bool:
    node = Taxonomy.of(ws).get(node_id)
    while node.parent_id is not None:
        node = Taxonomy.of(ws).get(node.parent_id)
        if node.status == "rejected":
            return True
    return False


def bulk_status(ws: Workspace, node_ids: Iterable[str], status: str, *, reviewer: str | None = None,
                source: str = "library", expect: str | None = None) -> dict[str, int]:
    """Accept or reject many nodes in one transaction (one batch in the log): a whole subtree or run at once.

    `expect` (e.g. 'proposed' for ids from `select_proposals`): the status the nodes had when they were picked;
    a node that someone else decided meanwhile (now neither `expect` nor `status`) is left as they decided it.
    Returns counts: 'applied', 'unchanged' (already so), 'decided_meanwhile' (left alone), 'gone' (deleted or
    merged away meanwhile)."""
    if status not in ("accepted", "rejected"):
        raise WorkbenchError(f"bulk status must be 'accepted' or 'rejected'; got {status!r}")
    ids = list(dict.fromkeys(node_ids))
    log = _Log(ws, reviewer, source)
    with ws.store.write() as conn:
        current = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            current.update({r[0]: r[1] for r in conn.execute(
                f"SELECT id, status FROM nodes WHERE id IN ({','.join('?' * len(chunk))})", chunk)})
        # Read inside this write transaction: a decision committed since the ids were picked is seen here.
        meanwhile = [i for i in ids if i in current and expect is not None and current[i] not in (expect, status)]
        todo = [i for i in ids if i in current and current[i] != status and i not in meanwhile]
        if todo:
            chains = _chains(ws.store, todo)
            paths = {k: SEP.join(c["names"]) for k, c in chains.items()}
            Taxonomy.of(ws).set_status(todo, status)
            action = {"accepted": "accept", "rejected": "reject"}[status]
            log.many(conn, [(action, i, paths.get(i), current[i], status) for i in todo])
    return {"applied": len(todo), "unchanged": len(current) - len(todo) - len(meanwhile),
            "decided_meanwhile": len(meanwhile), "gone": len(ids) - len(current)}


def bulk_counts_text(counts: dict[str, int]) -> str:
    """What a bulk decision left alone, for a person: '' when it applied to every node."""
    words = {"unchanged": "unchanged (already so)", "decided_meanwhile": "skipped (decided by someone else "
             "meanwhile; left as they decided)", "gone": "gone (deleted or merged away meanwhile)"}
    return ", ".join(f"{counts[k]} {w}" for k, w in words.items() if counts.get(k))


# -- the log and undo ----------------------------------------------------------------------------
def review_log(ws: Workspace, *, limit: int | None = 200, include_undone: bool = True):
    """The logged decisions, newest first, as a DataFrame (LOG_COLUMNS)."""
    import pandas as pd

    where = "" if include_undone else " WHERE undone_at IS NULL"
    lim = f" LIMIT {int(limit)}" if limit is not None else ""
    rows = ws.store.query(f"SELECT {', '.join(LOG_COLUMNS)} FROM review_log{where} ORDER BY id DESC{lim}")
    return pd.DataFrame([dict(r) for r in rows], columns=LOG_COLUMNS)


def undoable(ws: Workspace, n: int = 1) -> list[dict]:
    """The log rows `undo(ws, n)` would reverse, newest first."""
    batches = [r[0] for r in ws.store.query(
        "SELECT DISTINCT batch FROM review_log WHERE undone_at IS NULL ORDER BY batch DESC LIMIT ?", (int(n),))]
    if not batches:
        return []
    rows = ws.store.query(f"SELECT * FROM review_log WHERE batch IN ({','.join('?' * len(batches))})"
                          " AND undone_at IS NULL ORDER BY id DESC", batches)
    return [dict(r) for r in rows]


def undo(ws: Workspace, n: int = 1, *, reviewer: str | None = None) -> list[dict]:
    """Reverse the last `n` batches of decisions, newest change first, in one transaction: status back, name back,
    parent back (the node goes to the end of its old siblings). Returns the reversed log rows (newest first).

    Refuses, changing nothing, when a batch holds a merge or a node changed since outside the log."""
    if n < 1:
        raise WorkbenchError(f"undo needs n >= 1; got {n}")
    who = reviewer_name(reviewer)
    tax = Taxonomy.of(ws)
    with ws.store.write() as conn:
        rows = undoable(ws, n)
        if not rows:
            raise WorkbenchError("nothing to undo: the review log has no decision left that is not undone")
        merges = [r for r in rows if r["action"] == "merge"]
        if merges:
            m = merges[-1]
            ok = len({r["batch"] for r in rows if r["batch"] > m["batch"]})
            raise WorkbenchError(
                f"cannot undo the merge of {m['path']!r} into {m['new_value']} (log #{m['id']}, by {m['reviewer']} "
                f"at {m['at']}): a merge moves children and re-points attached rows without recording where they "
                "were, so it cannot be reversed exactly; nothing was undone"
                + (f". Undo at most {ok} decision(s) to stop before it" if ok else
                   ". Re-create the node by hand (`workbench taxonomy add`) if the merge was wrong"))
        for r in rows:
            nid = r["node_id"]
            cur = conn.execute("SELECT name, status, parent_id FROM nodes WHERE id=?", (nid,)).fetchone()
            if cur is None:
                raise WorkbenchError(f"cannot undo log #{r['id']} ({r['action']} of {r['path']!r}): node {nid} no "
                                     "longer exists (deleted or merged away since); nothing was undone")
            now = {"accept": cur["status"], "reject": cur["status"], "rename": cur["name"],
                   "move": cur["parent_id"] or ""}[r["action"]]
            if now != r["new_value"]:
                raise WorkbenchError(
                    f"cannot undo log #{r['id']} ({r['action']} of {r['path']!r} by {r['reviewer']}): it set "
                    f"{r['new_value']!r} but the node now has {now!r}, changed since outside the review log; "
                    "nothing was undone")
            if r["action"] in ("accept", "reject"):
                tax.set_status([nid], r["old_value"])
            elif r["action"] == "rename":
                tax.rename(nid, r["old_value"])
            else:
                tax.move(nid, r["old_value"] or None)
        conn.execute(f"UPDATE review_log SET undone_at=?, undone_by=? WHERE id IN ({','.join('?' * len(rows))})",
                     [utcnow(), who, *[r["id"] for r in rows]])
    return rows


def _chains(store, ids: list[str]) -> dict[str, dict]:
    """For each node: `names` root → node, `order` (the (position, name) chain: tree order when sorted) and
    `hidden` (an ancestor is rejected). One recursive query per 500 nodes."""
    out: dict[str, dict] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        rows = store.query(
            "WITH RECURSIVE up(start, id, depth) AS ("
            f" SELECT id, id, 0 FROM nodes WHERE id IN ({','.join('?' * len(chunk))})"
            " UNION ALL SELECT up.start, n.parent_id, up.depth + 1 FROM up JOIN nodes n ON n.id = up.id"
            " WHERE n.parent_id IS NOT NULL)"
            " SELECT up.start, up.depth, n.name, n.position, n.status FROM up JOIN nodes n ON n.id = up.id"
            " ORDER BY up.start, up.depth DESC", chunk)
        for r in rows:
            c = out.setdefault(r[0], {"names": [], "order": [], "hidden": False})
            c["names"].append(r[2])
            c["order"].append((r[3], r[2]))
            if r[1] > 0 and r[4] == "rejected":
                c["hidden"] = True
    return out


def _path_or_none(ws: Workspace, node_id: str) -> str | None:
    if ws.store.scalar("SELECT 1 FROM nodes WHERE id=?", (node_id,)) is None:
        return None
    return Taxonomy.of(ws).path(node_id)


def count_outcomes(results: Iterable[DecisionResult]) -> dict[str, int]:
    """How many results of each status (STATUSES order, zero counts left out)."""
    results = list(results)
    return {s: n for s in STATUSES if (n := sum(r.status == s for r in results))}
