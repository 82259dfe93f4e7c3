"""CLI: `workbench gaps show | propose | flag` — from a gap (a category, a task type, an empty task type, a
reference gap or a discovered cluster) to its images, samples and audited items, and from there to an action."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import typer

from workbench.analysis.gap_items import Drill, drill, empty_task_types, propose
from workbench.apps.cli.app import WS_ARG, gaps_app, open_ws
from workbench.core.errors import WorkbenchError
from workbench.core.resources import bundled_reference_names, reference_file
from workbench.core.workspace import Workspace
from workbench.review.adjudication import flag

CATEGORY = typer.Option(None, "--category", "-c", help="A first-level category (name or path).")
TASK_TYPE = typer.Option(None, "--task-type", "-t", help="A task type (`~` path or node id).")
REF_GAP = typer.Option(None, "--reference-gap", "-r", help="A reference task (its path or last name); needs "
                       "--reference.")
REFERENCE = typer.Option(None, "--reference", help="The reference list the gap is in: a file, or a bundled "
                         "list's name (" + ", ".join(bundled_reference_names()) + "; a unique prefix will do).")
CLUSTER = typer.Option(None, "--cluster", help="A discovered cluster's number (#N of `workbench discover`).")
AUDIT = typer.Option(None, "--audit", help="With --category/--task-type: an audited dataset's items there too.")
LIMIT = typer.Option(20, "--limit", "-n", min=1, help="Rows per table.")


def _pick(ws: Workspace, category, task_type, reference_gap, reference, cluster, audit, limit) -> Drill:
    given = {k: v for k, v in (("category", category), ("task_type", task_type), ("reference_gap", reference_gap),
                               ("cluster", cluster)) if v is not None}
    if len(given) != 1:
        raise WorkbenchError("name one gap: --category X, --task-type PATH, --reference-gap NAME --reference FILE "
                             "or --cluster N (--empty lists the empty task types)")
    (kind, target), = given.items()
    if audit and kind not in ("category", "task_type"):
        raise WorkbenchError("--audit goes with --category or --task-type (audited items are assigned to ours)")
    return drill(ws, kind, target, reference=reference_file(reference) if reference is not None else None,
                 audit=audit, limit=limit)


def _table(title: str, df: pd.DataFrame | None, cols: list[str]) -> None:
    if df is None:
        return
    typer.echo(f"{title} ({len(df)} shown):")
    for rec in df[[c for c in cols if c in df.columns]].to_dict("records"):
        typer.echo("  " + "  ".join("-" if v is None or (isinstance(v, float) and pd.isna(v)) else
                                    (f"{v:.3f}" if isinstance(v, float) else str(v).replace("\n", " ")[:80])
                                    for v in rec.values()))


@gaps_app.command("show")
def show_cmd(workspace: Path = WS_ARG, category: str | None = CATEGORY, task_type: str | None = TASK_TYPE,
             reference_gap: str | None = REF_GAP, reference: str | None = REFERENCE, cluster: int | None = CLUSTER,
             audit: str | None = AUDIT, empty: bool = typer.Option(False, "--empty", help="List the task types no "
                                                                    "image has as its best match."),
             limit: int = LIMIT, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Show the images, samples and audited items behind a gap: a category, a task type, a reference gap or a
    discovered cluster."""
    ws = open_ws(workspace)
    if empty:
        rows = empty_task_types(ws)
        for node_id, path in rows:
            typer.echo(f"{node_id}  {path}")
        typer.echo(f"{len(rows)} task type(s) with no image as best match; `workbench gaps show {ws.root} "
                   "--task-type PATH` shows the images that have one lower in their top-k")
        return
    d = _pick(ws, category, task_type, reference_gap, reference, cluster, audit, limit)
    if as_json:
        out = {"kind": d.kind, "target": d.target, "task_types": d.paths, "parent": d.parent_path,
               "provenance": d.provenance, "notes": d.notes, "images": d.images.to_dict("records"),
               "samples": d.samples.to_dict("records"),
               "audit": None if d.audit is None else d.audit.to_dict("records")}
        typer.echo(json.dumps(out, indent=1, default=str))
        return
    typer.echo(f"{d.kind.replace('_', ' ')}: {d.target}")
    typer.echo(f"task types behind it ({len(d.paths)}): " + "; ".join(d.paths[:8]) + (" …" if len(d.paths) > 8
                                                                                       else ""))
    _table("images (file, task type, rank, score)", d.images, ["image_id", "file", "task_path", "rank",
                                                                "candidate_score", "score"])
    _table("samples (id, task type, score, status, question)", d.samples,
           ["sample_id", "task_path", "score", "status", "flag", "question"])
    _table(f"audited items of {audit}", d.audit, ["item", "top1_path", "top1_score", "confidence", "instruction"])
    for n in d.notes:
        typer.echo(f"note: {n}")
    typer.echo(f"propose a task type for it: `workbench gaps propose {ws.root} NAME ...` (default parent: "
               f"{d.parent_path or '(top level)'})")


@gaps_app.command("propose")
def propose_cmd(workspace: Path = WS_ARG, name: str = typer.Argument(..., help="The new task type's name."),
                category: str | None = CATEGORY, task_type: str | None = TASK_TYPE,
                reference_gap: str | None = REF_GAP, reference: str | None = REFERENCE,
                cluster: int | None = CLUSTER, audit: str | None = AUDIT,
                parent: str | None = typer.Option(None, "--parent", help="Add under this node (path or id; "
                                                  "default: the nearest task type's parent; `-`: top level)."),
                ):
    """Add a `proposed` task type for a gap, under the nearest task type's parent, with where it came from."""
    ws = open_ws(workspace)
    d = _pick(ws, category, task_type, reference_gap, reference, cluster, audit, 1)
    node = propose(ws, d, name, "" if parent is None else (None if parent == "-" else parent))
    where = d.parent_path if parent is None else ("(top level)" if parent == "-" else parent)
    typer.echo(f"proposed {node.id} {name!r} under {where or '(top level)'} (origin {node.origin}; note: "
               f"{d.provenance}); accept or reject it with `workbench taxonomy accept|reject` or on the Review page")


@gaps_app.command("flag")
def flag_cmd(workspace: Path = WS_ARG, reason: str = typer.Option(..., "--reason", help="Why (kept with each "
                                                                  "flag)."),
             category: str | None = CATEGORY, task_type: str | None = TASK_TYPE,
             reference_gap: str | None = REF_GAP, reference: str | None = REFERENCE, cluster: int | None = CLUSTER,
             limit: int = typer.Option(1000, "--limit", "-n", min=1, help="Flag at most this many samples.")):
    """Flag the Q&A samples behind a gap (left out of selection and export until unflagged)."""
    ws = open_ws(workspace)
    d = _pick(ws, category, task_type, reference_gap, reference, cluster, None, limit)
    ids = [s for s in d.samples["sample_id"] if s]
    if not ids:
        raise WorkbenchError(f"{d.target}: no Q&A samples to flag ({'; '.join(d.notes) or 'none behind it'})")
    for sid in ids:
        flag(ws, sid, f"{reason} [{d.provenance}]")
    typer.echo(f"flagged {len(ids)} sample(s) of {d.target}; `workbench adjudicate {ws.root}` lists and unflags "
               "them")
