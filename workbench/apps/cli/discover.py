"""CLI: `workbench discover WORKSPACE`: name the task types the taxonomy lacks, from images no task type fits."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from workbench.analysis.discovery import discover, discovery_report
from workbench.apps.cli.app import WS_ARG, app, open_ws

PROPOSAL_KEYS = ("id", "name", "status", "node_id", "parent_id", "duplicate_of", "note")   # of --json's proposals


@app.command("discover")
def discover_cmd(
    workspace: Path = WS_ARG,
    min_cluster_size: int = typer.Option(10, "--min-cluster-size", min=2, help="HDBSCAN's smallest cluster of "
                                         "unfit images worth a task type."),
    threshold: float | None = typer.Option(None, "--threshold", help="Best-match score below which an image "
                                              "is unfit (default: [match] low_score_threshold)."),
    exemplars: int = typer.Option(6, "--exemplars", min=1, help="Images per cluster sent to the VLM."),
    endpoint: str | None = typer.Option(None, "--endpoint", "-e", help="Endpoint name from workbench.toml."),
    prompt: Path | None = typer.Option(None, "--prompt", help="Prompt file (default: discover_name.j2)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Cluster and estimate the calls; call and add nothing."),
    budget: float | None = typer.Option(None, "--budget", help="Stop when the spend would pass this (USD)."),
    report: bool = typer.Option(False, "--report", help="Only show, per discovered node, how many of its "
                                "previously unfit images it now takes (after accepting it and `workbench match`)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Cluster the images no task type fits (filter rejected every candidate, or a low best match) and ask the
    VLM to name one task type per cluster; each becomes a `proposed` node with origin 'discovered'."""
    ws = open_ws(workspace)
    if report:
        rows = discovery_report(ws)
        if as_json:
            typer.echo(json.dumps(rows, indent=1))
            return
        if not rows:
            typer.echo("no discoveries yet; run `workbench discover WORKSPACE`")
        for r in rows:
            if r["node_id"] is None:
                typer.echo(f"#{r['id']} {r['name'] or '(unnamed)'}: {r['status']}, {r['images']} image(s), no node")
            elif not r["matched"]:
                typer.echo(f"#{r['id']} {r['path']} [{r['node_status']}]: {r['images']} unfit image(s); not matched "
                           "yet (accept it, then run `workbench match WORKSPACE`)")
            else:
                typer.echo(f"#{r['id']} {r['path']} [{r['node_status']}]: now takes {r['top1']} of its "
                           f"{r['images']} previously unfit image(s) as best match, {r['topk']} in the top-k")
        return
    res = discover(ws, min_cluster_size=min_cluster_size, threshold=threshold, exemplars=exemplars,
                   endpoint=endpoint, prompt=prompt, dry_run=dry_run, budget_usd=budget)
    if as_json:
        typer.echo(json.dumps({
            "candidates": res.candidates, "filter_rejected": res.filter_rejected, "low_score": res.low_score,
            "loose_clusters": res.rejected_loose,
            "clusters": [{"label": c.label, "key": c.key, "size": len(c.image_ids), "cohesion": c.cohesion,
                          "exemplar_ids": c.exemplar_ids, "nearest": c.nearest,
                          "parents": [p for _, p in c.parents]} for c in res.clusters],
            "proposals": [{k: p.get(k) for k in PROPOSAL_KEYS} for p in res.proposals],
            "run": res.report.as_dict() if res.report else None}, indent=1, default=str))
        return
    typer.echo(f"{res.candidates} unfit image(s) ({res.filter_rejected} with every filter candidate rejected, "
               f"{res.low_score} with a low best match) -> {len(res.clusters)} cluster(s)"
               + (f"; {res.rejected_loose} loose cluster(s) skipped" if res.rejected_loose else ""))
    for c in res.clusters:
        near = ", ".join(f"{n['path']} ({n['score']:.2f})" for n in c.nearest[:3])
        typer.echo(f"  cluster {c.label}: {len(c.image_ids)} image(s), cohesion {c.cohesion:.2f}; parent "
                   f"{c.parents[0][1] if c.parents else '(top level)'}; nearest: {near}")
    if res.report is not None:
        typer.echo(res.report.summary())
    for p in res.proposals:
        typer.echo(f"  {p['status']}: {p['name'] or '-'}" + (f" ({p['note']})" if p["status"] != "proposed" else ""))
