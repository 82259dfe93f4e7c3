"""The Gaps page's reads and its one write of its own: a reference task list's coverage by the tree (and how many
texts still need sentence embeddings first), the discovered clusters with how their images are matched now, the
audited datasets, the nodes a new task type may go under, and a discovered cluster linked to the node proposed for
it, and what is behind a gap (`analysis/gap_items.py`: its images, samples and audited items)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pandas as pd
import streamlit as st

from workbench.analysis.audit import audit_frame, list_audits
from workbench.analysis.audit_label import label_agreement
from workbench.analysis.discovery import discovery_report
from workbench.analysis.gap_items import Drill, drill, empty_task_types
from workbench.analysis.reference_coverage import pending_embeddings, reference_coverage
from workbench.apps.dashboard import data
from workbench.core.resources import REFERENCE_DIR
from workbench.core.workspace import Workspace
from workbench.models.textembed import workspace_cache_dir
from workbench.taxonomy.model import LIVE, Taxonomy


def bundled_references() -> list[str]:
    """The reference task lists shipped with the package."""
    return sorted(str(p) for p in REFERENCE_DIR.glob("*.txt"))


def nodes_version(root: str) -> tuple:
    return data.version(root, "nodes")


@st.cache_data(show_spinner="Matching the reference's tasks to our task types…", max_entries=8)
def coverage(root: str, v: tuple, reference: str) -> dict:
    rep = reference_coverage(data.open_workspace(root), reference)
    return {"rows": [asdict(r) for r in rep.rows], "our_areas": rep.our_areas, "threshold": rep.threshold,
            "problems": [str(p) for p in rep.problems], "quality": rep.quality_line()}


def embed_cache_version(root: str) -> tuple:
    """The workspace's cached text embeddings (files and modification times)."""
    d = workspace_cache_dir(data.open_workspace(root))
    return tuple(sorted((f.name, f.stat().st_mtime_ns) for f in d.glob("*.npz"))) if d.exists() else ()


@st.cache_data(show_spinner="Checking which task types have text embeddings…", max_entries=4)
def pending(root: str, v: tuple, cache_v: tuple) -> int:
    """Texts of the tree to embed before a reference can be matched."""
    return pending_embeddings(data.open_workspace(root))


@st.cache_data(show_spinner=False, max_entries=4)
def discoveries(root: str, v: tuple) -> list[dict]:
    ws = data.open_workspace(root)
    report = {r["id"]: r for r in discovery_report(ws)}
    rows = ws.store.query("SELECT id, name, status, size, cohesion, exemplar_ids, nearest, parent_id, node_id, "
                          "duplicate_of, note, model, prompt_hash FROM discoveries ORDER BY size DESC, id")
    return [{**dict(r), "exemplar_ids": json.loads(r["exemplar_ids"]), "nearest": json.loads(r["nearest"]),
             **{k: report[r["id"]][k] for k in ("node_status", "path", "matched", "top1", "topk")}} for r in rows]


def link_discovery(ws: Workspace, discovery_id: int, node_id: str) -> None:
    """A discovered cluster's proposed node: the cluster points at it and is `proposed`."""
    with ws.store.write() as conn:
        conn.execute("UPDATE discoveries SET node_id=?, status='proposed' WHERE id=?", (node_id, discovery_id))


@st.cache_data(show_spinner=False, max_entries=4)
def audits(root: str, v: tuple) -> pd.DataFrame:
    return list_audits(data.open_workspace(root))


@st.cache_data(show_spinner="Reading the audit…", max_entries=8)
def audit_areas(root: str, v: tuple, name: str) -> pd.DataFrame:
    df = audit_frame(data.open_workspace(root), name)
    return df[df["level"] == 1][["path", "items", "with_items", "cov_items"]].reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=8)
def audit_checks(root: str, v: tuple, labels_v: tuple, name: str) -> dict:
    """What says how far to trust an audit: its text backend, the LLM label sample's agreement and the image
    assignment's agreement with the text (when they ran)."""
    ws = data.open_workspace(root)
    stored = ws.store.scalar("SELECT summary FROM audit_datasets WHERE name=?", (name,))
    summary = json.loads(stored) if stored else {}   # written when the audit finished
    return {"backend": summary.get("text_backend") or "minilm", "long_tail": summary.get("long_tail"),
            "labels": label_agreement(ws, name), "image": summary.get("image")}


@st.cache_data(show_spinner=False, max_entries=4)
def parent_choices(root: str, v: tuple) -> dict[str, str]:
    """{path: node id} of live nodes, for 'add under'."""
    idx = Taxonomy.of(data.open_workspace(root)).index(LIVE)   # a proposal can take children before review
    return {idx.paths[i]: i for i in idx.dfs()}


# -- drill-down: what is behind a gap ---------------------------------------------------------------
def drill_version(root: str) -> tuple:
    return data.version(root, "nodes", "matches", "samples", "selections", "sample_flags", "discoveries",
                        "audit_datasets")


@st.cache_data(show_spinner="Reading what is behind it…", max_entries=16)
def gap_drill(root: str, v: tuple, kind: str, target, reference: str | None = None, audit: str | None = None,
              limit: int = 200) -> Drill:
    return drill(data.open_workspace(root), kind, target, reference=reference, audit=audit, limit=limit,
                 index=data.every_node_index(root))


@st.cache_data(show_spinner=False, max_entries=4)
def empty_types(root: str, v: tuple) -> list[str]:
    """Paths of the task types no image has as its best match."""
    return [p for _, p in empty_task_types(data.open_workspace(root))]
