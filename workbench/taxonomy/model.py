"""The taxonomy model over the workspace store (ARCHITECTURE.md, "The taxonomy").

A node has a stable id, a name, a parent, a level (1 = first level), an origin
(seed | generated | imported | manual), a status (proposed | accepted | rejected) and
provenance (stage run, prompt file and hash, model, time). Task types are the leaves.

Which statuses make task types is the workspace's choice, decided here only (`task_statuses`): accepted nodes,
or with `[taxonomy] use_proposed = true` proposals too. `Taxonomy.of(ws)` carries it, and `index()`, `leaves()`
and `count_leaves()` with no `statuses` use it; review tools and tree views pass `LIVE` or `None` to see
everything. `task_type_counts(ws).line()` is the one "N accepted, M awaiting review" sentence every command and
page prints, and `first_open_notice` tells an existing workspace once what changed.

Ids are derived from the node's path when it is created (so importing the same file into
two workspaces gives the same ids) and never change afterwards: renames and moves keep
the id; a merged-away id stays resolvable through `node_aliases`.

Every edit runs in one write transaction; a failed edit changes nothing.
"""

from __future__ import annotations

import enum
import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from workbench.core.clock import utcnow
from workbench.core.errors import TaxonomyError
from workbench.core.store import Store
from workbench.core.workspace import PROPOSALS_NOTICE_KEY, Workspace
from workbench.taxonomy.names import SEP, NameProblem, check_name, name_key, replace_lookalikes, split_path

ORIGINS = ("seed", "generated", "imported", "manual", "discovered", "reference")
STATUSES = ("proposed", "accepted", "rejected")
ACCEPTED = ("accepted",)
# Every node not rejected: what the review tools and tree views show (task types only with use_proposed).
LIVE = ("proposed", "accepted")


class _Default(enum.Enum):
    TASK_TYPES = "the workspace's task-type statuses"


TASK_TYPES = _Default.TASK_TYPES    # the default of index/leaves/count_leaves: `Taxonomy.task_statuses`
StatusArg = Sequence[str] | None | _Default


def task_statuses(ws: Workspace) -> tuple[str, ...]:
    """The statuses whose nodes are task types in `ws`: accepted only, or proposed too with `use_proposed`."""
    return LIVE if ws.config.taxonomy.use_proposed else ACCEPTED


@dataclass(frozen=True)
class Provenance:
    stage_run_id: int | None = None
    prompt_file: str | None = None
    prompt_hash: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class Node:
    id: str
    parent_id: str | None
    name: str
    level: int
    position: int
    origin: str
    status: str
    created_at: str
    updated_at: str
    stage_run_id: int | None = None
    prompt_file: str | None = None
    prompt_hash: str | None = None
    model: str | None = None
    note: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Node:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass
class TreeIndex:
    """An in-memory view of (part of) the tree: children lists, paths, leaves."""

    nodes: dict[str, Node]
    children: dict[str | None, list[str]] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, nodes: Iterable[Node]) -> TreeIndex:
        by_id = {n.id: n for n in nodes}
        children: dict[str | None, list[str]] = {}
        for n in sorted(by_id.values(), key=lambda n: (n.level, n.position, n.name)):
            if n.parent_id is None or n.parent_id in by_id:
                children.setdefault(n.parent_id, []).append(n.id)
        idx = cls(nodes={}, children=children)
        # Walk from the roots: nodes whose ancestor is filtered out are not reachable.
        stack = [(nid, by_id[nid].name) for nid in reversed(children.get(None, []))]
        while stack:
            nid, path = stack.pop()
            idx.nodes[nid] = by_id[nid]
            idx.paths[nid] = path
            for cid in reversed(children.get(nid, [])):
                stack.append((cid, path + SEP + by_id[cid].name))
        idx.children = {k: v for k, v in children.items() if k is None or k in idx.nodes}
        return idx

    def roots(self) -> list[Node]:
        return [self.nodes[i] for i in self.children.get(None, [])]

    def kids(self, node_id: str | None) -> list[Node]:
        return [self.nodes[i] for i in self.children.get(node_id, [])]

    def is_leaf(self, node_id: str) -> bool:
        return not self.children.get(node_id)

    def leaves(self) -> list[Node]:
        """Leaves in depth-first order (the order export writes them)."""
        return [self.nodes[i] for i in self.dfs() if self.is_leaf(i)]

    def dfs(self) -> list[str]:
        out: list[str] = []
        stack = list(reversed(self.children.get(None, [])))
        while stack:
            nid = stack.pop()
            out.append(nid)
            stack.extend(reversed(self.children.get(nid, [])))
        return out

    def subtree(self, node_id: str) -> list[str]:
        out, stack = [], [node_id]
        while stack:
            nid = stack.pop()
            out.append(nid)
            stack.extend(self.children.get(nid, []))
        return out

    def ancestors(self, node_id: str) -> list[Node]:
        out = []
        n = self.nodes.get(node_id)
        while n is not None and n.parent_id is not None:
            n = self.nodes.get(n.parent_id)
            if n is not None:
                out.append(n)
        return list(reversed(out))

    def path_names(self, node_id: str) -> list[str]:
        return self.paths[node_id].split(SEP)


@dataclass(frozen=True)
class TaskTypeCounts:
    """How many task types a workspace has and how many proposals wait for review (`task_type_counts`)."""

    root: str                   # the workspace folder, for the command the line names
    accepted: int               # task types made of accepted nodes only
    in_use: int                 # task types the stages use (= accepted unless use_proposed)
    awaiting: int               # proposed nodes not hidden under a rejected one
    runs: tuple[int, ...]       # the stage runs that proposed them (newest first)
    use_proposed: bool

    def accept_command(self) -> str:
        run = f" --run {self.runs[0]}" if len(self.runs) == 1 else ""
        return f"workbench taxonomy accept {self.root} --proposed{run}"

    def line(self) -> str:
        """'task types: N accepted, M awaiting review ...', naming the command that accepts them."""
        if not self.awaiting:
            return f"task types: {self.accepted} accepted, none awaiting review"
        if self.use_proposed:
            return (f"task types: {self.in_use} in use: {self.accepted} accepted + proposals ({self.awaiting} "
                    "awaiting review), used because [taxonomy] use_proposed = true")
        runs = (f" (proposed by runs {', '.join(map(str, self.runs))}: add --run R for one of them)"
                if len(self.runs) > 1 else "")
        return (f"task types: {self.accepted} accepted, {self.awaiting} awaiting review (not used until accepted)"
                f" — review with `workbench taxonomy show {self.root} --status proposed`, accept with "
                f"`{self.accept_command()}`{runs}")


def task_type_counts(ws: Workspace) -> TaskTypeCounts:
    tax = Taxonomy.of(ws)
    q = ",".join("?" * len(LIVE))
    rows = ws.store.query(
        f"WITH RECURSIVE live(id) AS (SELECT id FROM nodes WHERE parent_id IS NULL AND status IN ({q})"
        f" UNION ALL SELECT n.id FROM nodes n JOIN live ON n.parent_id = live.id WHERE n.status IN ({q}))"
        " SELECT n.stage_run_id AS run, count(*) AS n FROM nodes n JOIN live ON live.id = n.id"
        " WHERE n.status = 'proposed' GROUP BY n.stage_run_id ORDER BY n.stage_run_id DESC", LIVE * 2)
    accepted = tax.count_leaves(ACCEPTED)
    in_use = accepted if tax.task_statuses == ACCEPTED else tax.count_leaves()
    return TaskTypeCounts(str(ws.root), accepted, in_use, sum(r["n"] for r in rows),
                          tuple(r["run"] for r in rows if r["run"] is not None), ws.config.taxonomy.use_proposed)


def first_open_notice(ws: Workspace) -> str | None:
    """Once per workspace (recorded in `meta`): what changed for a workspace whose proposals counted as task types
    before proposals waited for acceptance. None when already said, with use_proposed, or with no proposals (a
    workspace made since then: nothing changes for it). Deletes nothing."""
    if ws.store.scalar("SELECT 1 FROM meta WHERE key=?", (PROPOSALS_NOTICE_KEY,)):
        return None
    try:
        with ws.store.write() as conn:
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (PROPOSALS_NOTICE_KEY, utcnow()))
    except sqlite3.OperationalError:   # a read-only copy: say it (again next time) rather than fail the command
        pass
    counts = task_type_counts(ws)
    if counts.use_proposed or not counts.awaiting:
        return None
    return (f"note: {counts.awaiting} node(s) of this workspace are proposals awaiting review. match, filter, Q&A, "
            "referees, select, export, plan, coverage and audit now use accepted task types only "
            f"({counts.accepted} now); nothing computed was deleted. Accept the proposals with "
            f"`{counts.accept_command()}`, or set `[taxonomy] use_proposed = true` in workbench.toml to use them "
            "as before (this note is shown once).")


def make_id(path_key: str, salt: int = 0) -> str:
    h = hashlib.blake2b(f"{path_key}\x00{salt}".encode(), digest_size=6).hexdigest()
    return "t" + h


_COLUMNS = ", ".join(Node.__dataclass_fields__)


class Taxonomy:
    def __init__(self, store: Store, task_statuses: Sequence[str] = ACCEPTED):
        self.store = store
        self.task_statuses = tuple(task_statuses)

    @classmethod
    def of(cls, ws: Workspace) -> Taxonomy:
        """The workspace's taxonomy (a light view over its store: make one wherever it is needed), whose task
        types follow `[taxonomy] use_proposed`."""
        return cls(ws.store, task_statuses(ws))

    def resolve_statuses(self, statuses: StatusArg) -> Sequence[str] | None:
        """`statuses` itself, or the task types' statuses for `TASK_TYPES`."""
        return self.task_statuses if statuses is TASK_TYPES else statuses

    # -- reading -----------------------------------------------------------------------------
    def count(self, statuses: Sequence[str] | None = None) -> int:
        if statuses is None:
            return int(self.store.scalar("SELECT count(*) FROM nodes"))
        q = ",".join("?" * len(statuses))
        return int(self.store.scalar(f"SELECT count(*) FROM nodes WHERE status IN ({q})", tuple(statuses)))

    def nodes(self, statuses: Sequence[str] | None = None) -> list[Node]:
        if statuses is None:
            rows = self.store.query(f"SELECT {_COLUMNS} FROM nodes")
        else:
            q = ",".join("?" * len(statuses))
            rows = self.store.query(f"SELECT {_COLUMNS} FROM nodes WHERE status IN ({q})", tuple(statuses))
        return [Node.from_row(r) for r in rows]

    def index(self, statuses: StatusArg = TASK_TYPES) -> TreeIndex:
        """The tree restricted to `statuses` (default: the task types' statuses; None: every node; a node whose
        ancestor is filtered out is left out too)."""
        return TreeIndex.build(self.nodes(self.resolve_statuses(statuses)))

    def leaves(self, statuses: StatusArg = TASK_TYPES) -> list[tuple[Node, str]]:
        """Task types: (node, `~` path) for every leaf of the tree restricted to `statuses`."""
        idx = self.index(statuses)
        return [(n, idx.paths[n.id]) for n in idx.leaves()]

    def count_leaves(self, statuses: StatusArg = TASK_TYPES) -> int:
        """len(self.leaves(statuses)) in one SQL pass: the nodes reachable from a root through `statuses` that have
        no child of those statuses (~0.09 s at 22k nodes, against 0.6-0.8 s to build the index)."""
        statuses = self.resolve_statuses(statuses)
        if statuses is None:
            statuses = STATUSES
        q = ",".join("?" * len(statuses))
        return int(self.store.scalar(
            f"WITH RECURSIVE live(id) AS (SELECT id FROM nodes WHERE parent_id IS NULL AND status IN ({q})"
            f" UNION ALL SELECT n.id FROM nodes n JOIN live ON n.parent_id = live.id WHERE n.status IN ({q}))"
            f" SELECT count(*) FROM live WHERE NOT EXISTS"
            f" (SELECT 1 FROM nodes c WHERE c.parent_id = live.id AND c.status IN ({q}))", tuple(statuses) * 3))

    def get(self, node_id: str) -> Node:
        row = self.store.one(f"SELECT {_COLUMNS} FROM nodes WHERE id=?", (node_id,))
        if row is None:
            alias = self.store.scalar("SELECT node_id FROM node_aliases WHERE old_id=?", (node_id,))
            if alias:
                return self.get(alias)
            raise TaxonomyError(f"no node with id {node_id!r}; `workbench taxonomy show WORKSPACE` lists ids")
        return Node.from_row(row)

    def children(self, node_id: str | None) -> list[Node]:
        if node_id is None:
            rows = self.store.query(f"SELECT {_COLUMNS} FROM nodes WHERE parent_id IS NULL ORDER BY position, name")
        else:
            rows = self.store.query(f"SELECT {_COLUMNS} FROM nodes WHERE parent_id=? ORDER BY position, name",
                                    (node_id,))
        return [Node.from_row(r) for r in rows]

    def path(self, node_id: str) -> str:
        row = self.store.one(
            "WITH RECURSIVE up(id, parent_id, name, depth) AS ("
            " SELECT id, parent_id, name, 0 FROM nodes WHERE id=?"
            " UNION ALL SELECT n.id, n.parent_id, n.name, up.depth+1 FROM nodes n JOIN up ON n.id = up.parent_id)"
            " SELECT group_concat(name, ?) FROM (SELECT name FROM up ORDER BY depth DESC)",
            (self.get(node_id).id, SEP))
        return row[0]

    def find(self, path: str) -> Node | None:
        """The node at a `~` path (case-insensitive, normalised), or None."""
        text, _ = replace_lookalikes(path)
        try:
            names = split_path(text)
        except NameProblem as exc:
            raise TaxonomyError(f"bad path {path!r}: {exc}") from None
        parent = None
        node = None
        for name in names:
            row = self.store.one(
                f"SELECT {_COLUMNS} FROM nodes WHERE coalesce(parent_id,'')=? AND name_key=?",
                (parent or "", name_key(name)))
            if row is None:
                return None
            node = Node.from_row(row)
            parent = node.id
        return node

    def resolve(self, ref: str | Node) -> Node:
        """A node by id, merged-away id, or `~` path."""
        if isinstance(ref, Node):
            return self.get(ref.id)
        try:
            return self.get(ref)
        except TaxonomyError:
            node = self.find(ref) if ref.strip() else None
            if node is None:
                raise TaxonomyError(
                    f"no node with id or path {ref!r}; `workbench taxonomy show WORKSPACE` lists them") from None
            return node

    # -- adding ------------------------------------------------------------------------------
    def add(self, name: str, parent: str | Node | None = None, *, origin: str = "manual",
            status: str = "accepted", provenance: Provenance | None = None, note: str | None = None) -> Node:
        """Add one child under `parent` (None: a first-level node)."""
        _check_choice("origin", origin, ORIGINS)
        _check_choice("status", status, STATUSES)
        clean = _clean_name(name)
        with self.store.write() as conn:
            parent_node = self.resolve(parent) if parent is not None else None
            pid = parent_node.id if parent_node else None
            self._check_free(conn, pid, clean)
            parent_path = self.path(pid) if pid else ""
            nid = self._new_id(conn, (parent_path + SEP if pid else "") + clean)
            level = parent_node.level + 1 if parent_node else 1
            self._insert(conn, [(nid, pid, clean, level, origin, status, provenance, note)])
        return self.get(nid)

    def add_path(self, path: str, *, origin: str = "manual", status: str = "accepted",
                 provenance: Provenance | None = None) -> Node:
        """Add a `~` path, creating missing ancestors; returns the last node."""
        text, _ = replace_lookalikes(path)
        try:
            names = split_path(text)
        except NameProblem as exc:
            raise TaxonomyError(f"bad path {path!r}: {exc}") from None
        with self.store.write():
            ids = self.ensure_paths([names], origin=origin, status=status, provenance=provenance)[0]
        return self.get(ids[tuple(names)])

    def ensure_paths(self, paths: Sequence[Sequence[str]], *, origin: str, status: str,
                     provenance: Provenance | None = None) -> tuple[dict[tuple[str, ...], str], int]:
        """Bulk: make every path (a list of clean names) exist. Returns ({names: id}, created count).

        Existing nodes are reused (matched case-insensitively); new ones are created in the
        order the paths are given, so an export writes them back in the same order.
        """
        _check_choice("origin", origin, ORIGINS)
        _check_choice("status", status, STATUSES)
        with self.store.write() as conn:
            existing = {}
            taken_ids = set()
            levels = {}
            for row in conn.execute("SELECT id, parent_id, name_key, level FROM nodes"):
                existing[(row["parent_id"], row["name_key"])] = row["id"]
                taken_ids.add(row["id"])
                levels[row["id"]] = row["level"]
            next_pos: dict[str | None, int] = {}
            for row in conn.execute("SELECT parent_id, max(position) AS p FROM nodes GROUP BY parent_id"):
                next_pos[row["parent_id"]] = row["p"] + 1
            out: dict[tuple[str, ...], str] = {}
            new_rows: list[tuple[str, str | None, str, int, int, str]] = []   # id, parent, name, level, pos, key
            for names in paths:
                pid: str | None = None
                keys: list[str] = []
                for depth, name in enumerate(names):
                    k = name_key(name)
                    keys.append(k)
                    nid = existing.get((pid, k))
                    if nid is None:
                        nid = make_id(SEP.join(keys))
                        salt = 0
                        while nid in taken_ids:
                            salt += 1
                            nid = make_id(SEP.join(keys), salt)
                        taken_ids.add(nid)
                        existing[(pid, k)] = nid
                        pos = next_pos.get(pid, 0)
                        next_pos[pid] = pos + 1
                        new_rows.append((nid, pid, name, depth + 1, pos, k))
                    pid = nid
                assert pid is not None   # a path has at least one name
                out[tuple(names)] = pid
            now = utcnow()
            p = provenance or Provenance()
            conn.executemany(
                "INSERT INTO nodes(id, parent_id, name, name_key, level, position, origin, status, created_at,"
                " updated_at, stage_run_id, prompt_file, prompt_hash, model) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(nid, pid, name, k, lvl, pos, origin, status, now, now, p.stage_run_id, p.prompt_file,
                  p.prompt_hash, p.model) for nid, pid, name, lvl, pos, k in new_rows])
        return out, len(new_rows)

    # -- editing -----------------------------------------------------------------------------
    def rename(self, ref: str | Node, new_name: str) -> Node:
        clean = _clean_name(new_name)
        with self.store.write() as conn:
            node = self.resolve(ref)
            if name_key(clean) != name_key(node.name):
                self._check_free(conn, node.parent_id, clean)
            conn.execute("UPDATE nodes SET name=?, name_key=?, updated_at=? WHERE id=?",
                         (clean, name_key(clean), utcnow(), node.id))
        return self.get(node.id)

    def move(self, ref: str | Node, new_parent: str | Node | None) -> Node:
        with self.store.write() as conn:
            node = self.resolve(ref)
            parent = self.resolve(new_parent) if new_parent is not None else None
            pid = parent.id if parent else None
            if pid is not None and (pid == node.id or self._is_ancestor(conn, node.id, pid)):
                raise TaxonomyError(
                    f"cannot move {self.path(node.id)!r} under {self.path(pid)!r}: that is inside its own subtree")
            if pid == node.parent_id:
                return node
            self._check_free(conn, pid, node.name)
            pos = conn.execute("SELECT coalesce(max(position)+1, 0) FROM nodes WHERE coalesce(parent_id,'')=?",
                               (pid or "",)).fetchone()[0]
            conn.execute("UPDATE nodes SET parent_id=?, position=?, updated_at=? WHERE id=?",
                         (pid, pos, utcnow(), node.id))
            self._relevel(conn, node.id, (parent.level + 1) if parent else 1)
        return self.get(node.id)

    def delete(self, ref: str | Node) -> int:
        """Delete a node and its whole subtree (and everything attached to them). Returns nodes deleted."""
        with self.store.write() as conn:
            node = self.resolve(ref)
            n = len(self._subtree_ids(conn, node.id))
            conn.execute("DELETE FROM nodes WHERE id=?", (node.id,))
        return n

    def set_status(self, refs: Iterable[str | Node] | str | Node, status: str) -> int:
        _check_choice("status", status, STATUSES)
        if isinstance(refs, (str, Node)):
            refs = [refs]
        with self.store.write() as conn:
            ids = [self.resolve(r).id for r in refs]
            now = utcnow()
            conn.executemany("UPDATE nodes SET status=?, updated_at=? WHERE id=?", [(status, now, i) for i in ids])
        return len(ids)

    def accept(self, refs) -> int:
        return self.set_status(refs, "accepted")

    def reject(self, refs) -> int:
        return self.set_status(refs, "rejected")

    def merge(self, victim_ref: str | Node, survivor_ref: str | Node) -> Node:
        """Merge `victim` into `survivor`: children and everything attached move to the survivor.

        Children whose name the survivor already has are merged recursively. The victim's id
        keeps resolving to the survivor.
        """
        with self.store.write() as conn:
            victim = self.resolve(victim_ref)
            survivor = self.resolve(survivor_ref)
            if victim.id == survivor.id:
                raise TaxonomyError(f"cannot merge {victim.id} into itself")
            if self._is_ancestor(conn, victim.id, survivor.id):
                raise TaxonomyError(
                    f"cannot merge {self.path(victim.id)!r} into its own descendant {self.path(survivor.id)!r}; "
                    "merge the other way round")
            self._merge(conn, victim.id, survivor.id)
        return self.get(survivor.id)

    def _merge(self, conn, victim: str, survivor: str) -> None:
        surv_level = conn.execute("SELECT level FROM nodes WHERE id=?", (survivor,)).fetchone()[0]
        for child in conn.execute("SELECT id, name_key FROM nodes WHERE parent_id=? ORDER BY position",
                                  (victim,)).fetchall():
            twin = conn.execute("SELECT id FROM nodes WHERE parent_id=? AND name_key=?",
                                (survivor, child["name_key"])).fetchone()
            if twin is not None:
                self._merge(conn, child["id"], twin["id"])
            else:
                pos = conn.execute("SELECT coalesce(max(position)+1,0) FROM nodes WHERE parent_id=?",
                                   (survivor,)).fetchone()[0]
                conn.execute("UPDATE nodes SET parent_id=?, position=?, updated_at=? WHERE id=?",
                             (survivor, pos, utcnow(), child["id"]))
                self._relevel(conn, child["id"], surv_level + 1)
        # Re-point every reference to the victim held by other tables (found from the schema).
        for table, column in _node_references(conn):
            conn.execute(f'UPDATE OR IGNORE "{table}" SET "{column}"=? WHERE "{column}"=?', (survivor, victim))
        now = utcnow()
        conn.execute("UPDATE node_aliases SET node_id=? WHERE node_id=?", (survivor, victim))
        conn.execute("INSERT OR REPLACE INTO node_aliases(old_id, node_id, reason, created_at) VALUES (?,?,?,?)",
                     (victim, survivor, "merge", now))
        conn.execute("DELETE FROM nodes WHERE id=?", (victim,))
        conn.execute("UPDATE nodes SET updated_at=? WHERE id=?", (now, survivor))

    # -- helpers -----------------------------------------------------------------------------
    def _insert(self, conn, rows) -> None:
        now = utcnow()
        for nid, pid, name, level, origin, status, prov, note in rows:
            p = prov or Provenance()
            pos = conn.execute("SELECT coalesce(max(position)+1,0) FROM nodes WHERE coalesce(parent_id,'')=?",
                               (pid or "",)).fetchone()[0]
            conn.execute(
                "INSERT INTO nodes(id, parent_id, name, name_key, level, position, origin, status, created_at,"
                " updated_at, stage_run_id, prompt_file, prompt_hash, model, note)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (nid, pid, name, name_key(name), level, pos, origin, status, now, now, p.stage_run_id,
                 p.prompt_file, p.prompt_hash, p.model, note))

    def _new_id(self, conn, path: str) -> str:
        key = SEP.join(name_key(p) for p in path.split(SEP))
        salt = 0
        while True:
            nid = make_id(key, salt)
            if conn.execute("SELECT 1 FROM nodes WHERE id=? UNION SELECT 1 FROM node_aliases WHERE old_id=?",
                            (nid, nid)).fetchone() is None:
                return nid
            salt += 1

    def _check_free(self, conn, parent_id: str | None, name: str) -> None:
        row = conn.execute("SELECT id, name, status FROM nodes WHERE coalesce(parent_id,'')=? AND name_key=?",
                           (parent_id or "", name_key(name))).fetchone()
        if row is not None:
            where = f"under {self.path(parent_id)!r}" if parent_id else "at the first level"
            raise TaxonomyError(
                f"a node named {row['name']!r} already exists {where} (id {row['id']}, {row['status']}); "
                "choose another name or merge the two nodes")

    @staticmethod
    def _subtree_ids(conn, node_id: str) -> list[str]:
        rows = conn.execute("WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL "
                            "SELECT n.id FROM nodes n JOIN sub ON n.parent_id = sub.id) SELECT id FROM sub",
                            (node_id,)).fetchall()
        return [r[0] for r in rows]

    def _is_ancestor(self, conn, ancestor: str, node: str) -> bool:
        return node in self._subtree_ids(conn, ancestor)

    @staticmethod
    def _relevel(conn, node_id: str, level: int) -> None:
        conn.execute(
            "WITH RECURSIVE sub(id, depth) AS (SELECT ?, 0 UNION ALL "
            "SELECT n.id, sub.depth+1 FROM nodes n JOIN sub ON n.parent_id = sub.id) "
            "UPDATE nodes SET level = ? + (SELECT depth FROM sub WHERE sub.id = nodes.id) "
            "WHERE id IN (SELECT id FROM sub)", (node_id, level))


def _node_references(conn) -> list[tuple[str, str]]:
    """(table, column) pairs that reference nodes(id), except the tree's own parent link and aliases."""
    out = []
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for t in tables:
        if t in ("nodes", "node_aliases"):
            continue
        for fk in conn.execute(f'PRAGMA foreign_key_list("{t}")'):
            if fk["table"] == "nodes":
                out.append((t, fk["from"]))
    return out


def _clean_name(name: str) -> str:
    text, found = replace_lookalikes(name)
    if found:
        raise TaxonomyError(f"bad name {name!r}: it contains {found[0]}, which reads as the level separator")
    try:
        return check_name(text)
    except NameProblem as exc:
        raise TaxonomyError(f"bad name {name!r}: {exc}") from None


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise TaxonomyError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
