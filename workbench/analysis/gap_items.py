"""Drill-down from a gap to what is behind it, and a gap turned into a proposed task type.

A gap is one of: a first-level category (`category`), a task type (`task_type`; an empty one, with no image as
best match, is listed by `empty_task_types`), a reference task the tree lacks (`reference_gap`, from
`reference_coverage`) or a discovered cluster of unfit images (`cluster`). `drill(ws, kind, target)` returns a
`Drill`: the task types behind it, their images (from `matches`, with the file, rank and cosine score), the Q&A
samples (`samples` with selection and flag) and, given an audit name, the audited items (the audit helper's
`audit_items`). The CLI (`workbench gaps show`) and the Gaps page show the same frames.

`propose(ws, drill, name, parent=...)` adds a `proposed` node with its provenance: origin 'reference' for a
reference gap, 'discovered' for a cluster, 'manual' otherwise, and a note naming where it came from (reference
file and task, audit and category, cluster, map selection). The default parent is `drill.parent_id`: the nearest
task type's parent (the nearest itself when it is a first-level category, so one click never adds a first-level
node), the cluster's parent, the category itself.

A map selection (the dashboard's map, the notebooks' map) is `drill(ws, "map", image_ids)`; its ids are exported
as `selection_tsv(image_ids, task_ids)`, one `kind<TAB>id` line each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from workbench.analysis import audit as audit_mod
from workbench.analysis.reference_coverage import reference_coverage
from workbench.core.errors import WorkbenchError
from workbench.core.resources import bundled_reference_names
from workbench.core.workspace import Workspace
from workbench.stages.match.stage import tasks_without_images
from workbench.taxonomy.model import Node, Taxonomy, TreeIndex
from workbench.taxonomy.names import SEP

KINDS = ("category", "task_type", "reference_gap", "cluster", "map")
ORIGIN = {"reference_gap": "reference", "cluster": "discovered"}
CHUNK = 900   # ids per IN (...) list
IMAGE_COLUMNS = ["image_id", "file", "task_path", "rank", "score"]
SAMPLE_COLUMNS = ["sample_id", "image_id", "file", "task_path", "score", "question", "answer", "status",
                  "selected", "flag"]


@dataclass
class Drill:
    kind: str                        # one of KINDS
    target: str                      # what was asked for, as shown
    node_ids: list[str]              # our task types behind it
    paths: list[str]
    images: pd.DataFrame             # IMAGE_COLUMNS, best score first
    samples: pd.DataFrame            # SAMPLE_COLUMNS
    parent_id: str | None = None     # the default parent of a node proposed for it
    name: str = ""                   # the default name of that node
    provenance: str = ""             # the note a proposed node gets
    audit: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)   # why a part is empty, what else to run
    parent_path: str | None = None   # the path of parent_id


def _chunks(ids: list) -> list[list]:
    return [ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)] or [[]]


def _file(root: str | None, path: str | None) -> str:
    return str(Path(root) / path) if root and path else ""


def image_rows(ws: Workspace, *, node_ids: list[str] | None = None, image_ids: list[str] | None = None,
               max_rank: int | None = None, limit: int | None = 50, paths: dict | None = None) -> pd.DataFrame:
    """Matched images of these task types (or these images' best match), best score first. `paths`: the tree's
    paths by id when the caller has them (building them is ~0.6 s at paper scale)."""
    paths = Taxonomy.of(ws).index(None).paths if paths is None else paths
    col, ids = ("m.node_id", node_ids) if node_ids is not None else ("m.image_id", image_ids or [])
    rank_sql = " AND m.rank <= ?" if max_rank else ""
    if image_ids is not None and node_ids is None:
        rank_sql, max_rank = " AND m.rank = 1", None
    rows = []
    for part in _chunks(list(ids)):
        if not part:
            break
        sql = (f"SELECT m.image_id, m.node_id, m.rank, m.score, i.root, i.path FROM matches m "
               f"JOIN images i ON i.id = m.image_id WHERE {col} IN ({','.join('?' * len(part))}){rank_sql}")
        rows += ws.store.query(sql, (*part, *([max_rank] if max_rank else [])))
    df = pd.DataFrame([{"image_id": r["image_id"], "file": _file(r["root"], r["path"]),
                        "task_path": paths.get(r["node_id"], r["node_id"]), "rank": r["rank"],
                        "score": round(r["score"], 4)} for r in rows], columns=IMAGE_COLUMNS)
    df = df.sort_values(["score", "image_id"], ascending=[False, True]).reset_index(drop=True)
    return df if limit is None else df.head(limit)


def sample_rows(ws: Workspace, *, node_ids: list[str] | None = None, image_ids: list[str] | None = None,
                limit: int | None = 50, paths: dict | None = None) -> pd.DataFrame:
    """Q&A samples of these task types (or images), with the image's match score, selection and flag (`paths`: as
    for `image_rows`)."""
    paths = Taxonomy.of(ws).index(None).paths if paths is None else paths
    col, ids = ("s.node_id", node_ids) if node_ids is not None else ("s.image_id", image_ids or [])
    rows = []
    for part in _chunks(list(ids)):
        if not part:
            break
        rows += ws.store.query(
            "SELECT s.id, s.image_id, s.node_id, s.question, s.answer, s.status, m.score, sel.selected, "
            "f.reason AS flag, i.root, i.path FROM samples s JOIN images i ON i.id = s.image_id "
            "LEFT JOIN matches m ON m.image_id = s.image_id AND m.node_id = s.node_id "
            "LEFT JOIN selections sel ON sel.sample_id = s.id LEFT JOIN sample_flags f ON f.sample_id = s.id "
            f"WHERE {col} IN ({','.join('?' * len(part))})", part)
    df = pd.DataFrame([{"sample_id": r["id"], "image_id": r["image_id"], "file": _file(r["root"], r["path"]),
                        "task_path": paths.get(r["node_id"], r["node_id"] or ""),
                        "score": None if r["score"] is None else round(r["score"], 4), "question": r["question"],
                        "answer": r["answer"], "status": r["status"],
                        "selected": None if r["selected"] is None else bool(r["selected"]), "flag": r["flag"]}
                       for r in rows], columns=SAMPLE_COLUMNS)
    df = df.sort_values(["score", "sample_id"], ascending=[False, True], na_position="last").reset_index(drop=True)
    return df if limit is None else df.head(limit)


def audit_rows(ws: Workspace, name: str, *, category: str | None = None, task_type: str | None = None,
               limit: int | None = 50) -> pd.DataFrame:
    """An audit's items in a category or task type (`analysis.audit.audit_items`, from the audit work)."""
    fn = getattr(audit_mod, "audit_items", None)
    if fn is None:
        raise WorkbenchError("this version has no audit drill-down yet (analysis.audit.audit_items is missing); "
                             "drop --audit, or update the workbench")
    return fn(ws, name, category=category, task_type=task_type, limit=limit)


def empty_task_types(ws: Workspace) -> list[tuple[str, str]]:
    """(node id, path) of task types that no image has as its best match."""
    return tasks_without_images(ws, max_rank=1)


def _node(ws: Workspace, text: str, what: str) -> Node:
    try:
        return Taxonomy.of(ws).resolve(text)
    except WorkbenchError as exc:
        raise WorkbenchError(f"{what} {text!r}: {exc}") from None


def _parent_of(idx, node_id: str | None) -> str | None:
    """The parent for a node proposed beside `node_id`: its parent, or the node itself at the first level."""
    if node_id is None or node_id not in idx.nodes:
        return None
    return idx.nodes[node_id].parent_id or node_id


def drill(ws: Workspace, kind: str, target, *, reference: str | Path | None = None, audit: str | None = None,
          limit: int | None = 50, index: TreeIndex | None = None) -> Drill:
    """What is behind a gap (see the module docstring); `target`: a category name or path, a task type's path or
    id, a reference task (its path or last name; `reference`: the list it is in), a cluster number, or for
    `map` a list of image ids. `index`: the tree of every node (any status) when the caller keeps one (building it
    is ~0.5 s at paper scale: most of a map selection's drill)."""
    if kind not in KINDS:
        raise WorkbenchError(f"kind {kind!r}: use one of {', '.join(KINDS)}")
    idx = Taxonomy.of(ws).index(None) if index is None else index
    if kind in ("category", "task_type"):
        node = _node(ws, str(target), "category" if kind == "category" else "task type")
        if kind == "category" and node.parent_id:
            raise WorkbenchError(f"category {target!r} is not first-level ({idx.paths[node.id]}); use --task-type")
        live = Taxonomy.of(ws).index()
        ids = list(live.subtree(node.id)) if node.id in live.nodes else [node.id]
        d = Drill(kind, idx.paths[node.id], ids, [idx.paths[i] for i in ids],
                  image_rows(ws, node_ids=ids, max_rank=1 if kind == "category" else None, limit=limit),
                  sample_rows(ws, node_ids=ids, limit=limit),
                  parent_id=node.id if kind == "category" else _parent_of(idx, node.id),
                  provenance=f"gap ({kind.replace('_', ' ')}): {idx.paths[node.id]}")
        if audit:
            scope = {"category": node.name} if kind == "category" else {"task_type": idx.paths[node.id]}
            d.audit = audit_rows(ws, audit, limit=limit, **scope)
            d.provenance = f"gap (audit {audit}): {idx.paths[node.id]}"
    elif kind == "reference_gap":
        d = _reference_drill(ws, idx, str(target), reference, limit)
    elif kind == "cluster":
        d = _cluster_drill(ws, idx, target, limit)
    else:
        image_ids = list(target)
        d = Drill("map", f"{len(image_ids)} image(s) selected on the map", [], [],
                  image_rows(ws, image_ids=image_ids, limit=limit, paths=idx.paths),
                  sample_rows(ws, image_ids=image_ids, limit=limit, paths=idx.paths),
                  provenance=f"gap (map selection): {len(image_ids)} image(s), e.g. {', '.join(image_ids[:3])}")
        best = d.images["task_path"].mode()   # the task type most of them match best
        by_path = {p: i for i, p in idx.paths.items()}
        if len(best):
            d.parent_id = _parent_of(idx, by_path.get(best.iloc[0]))
    d.parent_path = idx.paths.get(d.parent_id) if d.parent_id else None
    if d.images.empty:
        d.notes.append("no matched images: run `workbench match` (after `images add`)" if not
                       ws.store.scalar("SELECT count(*) FROM matches") else "no image has these task types among "
                       "its matches")
    if d.samples.empty:
        d.notes.append("no Q&A samples for it yet (`workbench qa` writes them for kept task types)")
    return d


def selection_tsv(image_ids: list[str], task_ids: list[str]) -> str:
    """A map selection's ids as TSV with a header (`kind`, `id`): images first, then task types."""
    lines = ["kind\tid", *(f"image\t{i}" for i in image_ids), *(f"task\t{t}" for t in task_ids)]
    return "\n".join(lines) + "\n"


def _reference_drill(ws, idx, name: str, reference, limit) -> Drill:
    if reference is None:
        raise WorkbenchError("a reference gap needs its reference list: --reference FILE or a bundled list's name ("
                             + ", ".join(bundled_reference_names()) + ")")
    rep = reference_coverage(ws, reference)
    key = name.strip().lower()
    row = next((r for r in rep.rows if r.reference_path.lower() == key), None) or next(
        (r for r in rep.rows if r.reference_path.split(SEP)[-1].lower() == key), None)
    if row is None:
        some = ", ".join(r.reference_path for r in rep.gaps[:5])
        raise WorkbenchError(f"{reference}: no reference task {name!r}; its gaps include: {some or '(none)'}")
    ids = [c["id"] for c in row.candidates if c["id"] in idx.nodes]
    images = image_rows(ws, node_ids=ids, limit=None)
    cand = {c["path"]: c["score"] for c in row.candidates}
    images.insert(4, "candidate_score", images["task_path"].map(cand))
    state = "covered" if row.covered else "gap"
    return Drill("reference_gap", f"{row.reference_path} ({state}, score {row.score:.3f}, {row.confidence} "
                 "confidence)", ids, [idx.paths[i] for i in ids],
                 images if limit is None else images.head(limit), sample_rows(ws, node_ids=ids, limit=limit),
                 parent_id=_parent_of(idx, row.nearest_id), name=row.reference_path.split(SEP)[-1],
                 provenance=f"gap of reference {Path(reference).name}: {row.reference_path} (nearest "
                 f"{row.nearest_path}, score {row.score:.3f})")


def _cluster_drill(ws, idx, number, limit) -> Drill:
    try:
        n = int(number)
    except (TypeError, ValueError):
        raise WorkbenchError(f"cluster {number!r}: give the number `workbench discover` printed (#N)") from None
    r = ws.store.query("SELECT * FROM discoveries WHERE id = ?", (n,))
    if not r:
        have = [x["id"] for x in ws.store.query("SELECT id FROM discoveries ORDER BY id")]
        raise WorkbenchError(f"no discovered cluster #{n}; " + (f"there are #{', #'.join(map(str, have))}" if have
                                                               else "run `workbench discover WORKSPACE` first"))
    r = r[0]
    image_ids = json.loads(r["image_ids"])
    nearest = json.loads(r["nearest"])
    ids = [x["node_id"] for x in nearest if x.get("node_id") in idx.nodes]
    return Drill("cluster", f"#{n} {r['name'] or '(unnamed)'} ({len(image_ids)} unfit images)", ids,
                 [idx.paths[i] for i in ids], image_rows(ws, image_ids=image_ids, limit=limit),
                 sample_rows(ws, image_ids=image_ids, limit=limit), parent_id=r["parent_id"], name=r["name"] or "",
                 provenance=f"discovered cluster #{n} ({len(image_ids)} unfit images)")


def propose(ws: Workspace, d: Drill, name: str, parent: str | None = "", *, origin: str | None = None) -> Node:
    """Add `name` as a `proposed` node for the gap `d`, under `parent` (a path or id; "" : `d.parent_id`;
    None: the top level), with origin and a note recording where it came from."""
    tax = Taxonomy.of(ws)
    under = d.parent_id if parent == "" else (None if parent is None else _node(ws, parent, "parent").id)
    node = tax.add(name, under, origin=origin or ORIGIN.get(d.kind, "manual"), status="proposed",
                   note=d.provenance)
    if d.kind == "cluster":
        with ws.store.write() as conn:   # the cluster points at its node, as `discover` does
            conn.execute("UPDATE discoveries SET node_id=?, status='proposed' WHERE id=?",
                         (node.id, int(d.target.split()[0].lstrip("#"))))
    return node
