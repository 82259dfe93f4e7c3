"""Reviewing proposed nodes: what is pending, and applying a curator's decisions (no widget imports).

    pending = pending_proposals(ws, stage_run_id=3)          # every node still 'proposed' (a DataFrame)
    results = apply_decisions(ws, [Decision("t0123456789ab", "accept"),
                                   Decision("t1111111111aa", "rename", new_name="Chart reading")])
    [r.outcome for r in results]     # 'applied', 'skipped (keep)', 'unchanged (already accepted)', 'failed: ...'

Actions:
- `keep`: leave the node as it is (decide later); reported as 'skipped (keep)'.
- `accept` / `reject`: set the status. `accept` with a `new_name` renames first and accepts under the new name
  (both or neither). A `new_name` given with `reject` is not applied; the result says so.
- `rename`: rename only; the status stays what it is (a proposal stays pending).

Each decision is its own write transaction, so a failed one (a name that clashes with a sibling, a node deleted
or merged away meanwhile, a bad name) leaves the others applied. Applying is idempotent: a decision whose effect
is already in the workspace writes nothing (not even `updated_at`) and is reported as 'unchanged (...)'.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Iterable

from workbench.errors import WorkbenchError
from workbench.taxonomy.names import normalize_name

ACTIONS = ("keep", "accept", "reject", "rename")
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

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise WorkbenchError(f"review action must be one of {', '.join(ACTIONS)}; got {self.action!r}")
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
def pending_proposals(ws, *, stage_run_id: int | None = None, prompt_hash: str | None = None,
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
        params.append(ws.taxonomy.resolve(parent).id)
    rows = ws.store.query(
        "SELECT n.id AS node_id, n.name, n.parent_id, n.level, n.origin, n.stage_run_id, r.stage, n.prompt_hash,"
        " n.prompt_file, n.model, n.created_at FROM nodes n LEFT JOIN stage_runs r ON r.id = n.stage_run_id"
        f" WHERE {' AND '.join(conds)}", params)
    out = pd.DataFrame([dict(r) for r in rows],
                       columns=[c for c in PENDING_COLUMNS if c not in ("path", "parent_path", "under_rejected")])
    if out.empty:
        return pd.DataFrame(columns=PENDING_COLUMNS).astype({"stage_run_id": "Int64", "level": "int64",
                                                             "under_rejected": "bool"})
    # Paths, tree order and hidden-ness from one read of the whole tree (every status).
    idx = ws.taxonomy.index(None)
    order = {nid: i for i, nid in enumerate(idx.dfs())}
    hidden: dict[str, bool] = {}
    for nid in idx.dfs():
        node = idx.nodes[nid]
        up = node.parent_id
        hidden[nid] = up is not None and (hidden[up] or idx.nodes[up].status == "rejected")
    out["path"] = [idx.paths.get(n) for n in out.node_id]
    out["parent_path"] = [idx.paths.get(p) if p is not None else None for p in out.parent_id]
    out["under_rejected"] = [hidden.get(n, False) for n in out.node_id]
    out["stage_run_id"] = out["stage_run_id"].astype("Int64")
    run_key = [-(r) if r is not pd.NA else 1 for r in out.stage_run_id]   # newest run first, no run last
    out = out.assign(_run=run_key, _order=[order.get(n, len(order)) for n in out.node_id])
    out = out.sort_values(["_run", "_order"], kind="stable").drop(columns=["_run", "_order"])
    return out[PENDING_COLUMNS].reset_index(drop=True)


# -- applying decisions ---------------------------------------------------------------------------
def apply_decisions(ws, decisions: Iterable[Decision]) -> list[DecisionResult]:
    """Apply each decision in its own transaction through the `Taxonomy` API; one result per decision."""
    return [_apply_one(ws, d) for d in decisions]


def _apply_one(ws, d: Decision) -> DecisionResult:
    if d.action == "keep":
        return DecisionResult(d, "skipped", "keep", _path_or_none(ws, d.node_id))
    try:
        with ws.store.write() as conn:
            status, detail = _apply_in_transaction(ws, conn, d)
            path = ws.taxonomy.path(d.node_id) if status != "failed" else _path_or_none(ws, d.node_id)
    except (WorkbenchError, sqlite3.Error) as exc:
        return DecisionResult(d, "failed", str(exc), _path_or_none(ws, d.node_id))
    return DecisionResult(d, status, detail, path)


def _apply_in_transaction(ws, conn, d: Decision) -> tuple[str, str]:
    tax = ws.taxonomy
    row = conn.execute("SELECT name, status FROM nodes WHERE id=?", (d.node_id,)).fetchone()
    if row is None:
        # Not `tax.get`: that follows a merge alias, and a decision about the victim is not one about the survivor.
        survivor = conn.execute("SELECT node_id FROM node_aliases WHERE old_id=?", (d.node_id,)).fetchone()
        if survivor is not None:
            return "failed", (f"node {d.node_id} was merged into {tax.path(survivor[0])!r} ({survivor[0]}) "
                              "meanwhile; review that node instead")
        return "failed", f"node {d.node_id} no longer exists (deleted meanwhile)"
    name, status = row["name"], row["status"]
    new_name = d.new_name
    renames = new_name is not None and normalize_name(new_name) != name

    if d.action == "rename":
        if new_name is None:
            return "failed", "rename needs a new name"
        if not renames:
            return "unchanged", f"already named {name!r}"
        tax.rename(d.node_id, new_name)
        return "applied", f"renamed to {tax.get(d.node_id).name!r}"

    if d.action == "accept":
        if not renames and status == "accepted":
            return "unchanged", "already accepted"
        done = []
        if renames:
            tax.rename(d.node_id, new_name)     # a clash raises: the accept below is not applied either
            done.append(f"renamed to {tax.get(d.node_id).name!r}")
        if status != "accepted":
            tax.accept([d.node_id])
            done.append("accepted")
        return "applied", " and ".join(done)

    # reject
    ignored = "; the new name was not applied (a rejected node keeps its name)" if renames else ""
    if status == "rejected":
        return "unchanged", "already rejected" + ignored
    tax.reject([d.node_id])
    return "applied", "rejected" + ignored


def _path_or_none(ws, node_id: str) -> str | None:
    if ws.store.scalar("SELECT 1 FROM nodes WHERE id=?", (node_id,)) is None:
        return None
    return ws.taxonomy.path(node_id)


def count_outcomes(results: Iterable[DecisionResult]) -> dict[str, int]:
    """How many results of each status (STATUSES order, zero counts left out)."""
    results = list(results)
    return {s: n for s in STATUSES if (n := sum(r.status == s for r in results))}
