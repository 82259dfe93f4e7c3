"""CLI: `workbench audit WORKSPACE DATASET`: which of our task types an existing SFT dataset covers."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from workbench.apps.cli.app import WS_ARG, app, open_ws
from workbench.core.errors import WorkbenchError


@app.command("audit")
def audit_cmd(
    workspace: Path = WS_ARG,
    dataset: Path = typer.Argument(..., help="LLaVA JSON, JSONL / ShareGPT, a Parquet file or folder, or a "
                                   "Hugging Face `datasets` folder.", show_default=False),
    name: str | None = typer.Option(None, "--name", "-n", help="Store the audit under this name (default: "
                                       "the file name without its suffix)."),
    format: str | None = typer.Option(None, "--format", "-f", help="llava-json, jsonl, parquet or "
                                         "hf-datasets (default: detected)."),
    task_field: str | None = typer.Option(None, "--task-field", help="The dataset's own task field, "
                                             "cross-tabulated with ours (default: task, task_type, category, "
                                             "ability or type when present)."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="Task types kept per item, with scores."),
    chunk_size: int = typer.Option(8192, "--chunk-size", min=1, help="Items per chunk (each stored as it "
                                   "finishes; a stopped audit resumes)."),
    min_score: float = typer.Option(0.25, "--min-score", min=0, max=1, help="Top-1 score below which an item "
                                    "counts as unassigned."),
    compare: str | None = typer.Option(None, "--compare", help="Compare with another stored audit, or "
                                          "`selected` (this workspace's selected samples)."),
    text_backend: str | None = typer.Option(None, "--text-backend", help="How instructions become vectors: "
                                               "minilm (the sentence model; default) or static (model2vec "
                                               "distilled locally from it: 50-75x faster, 1 M items in ~1-2 min, "
                                               "but its top-1 agrees with minilm on only ~45-65% of items)."),
    images: bool | None = typer.Option(None, "--images/--no-images", help="Also assign items whose image "
                                          "file resolves with the workspace's CLIP (default: when [clip] weights "
                                          "are on this machine and some image resolves)."),
    image_root: Path | None = typer.Option(None, "--image-root", help="Folder the items' image paths are "
                                              "relative to (default: the dataset file's folder)."),
    label_sample: int | None = typer.Option(None, "--label-sample", min=1, help="Ask the LLM to label N items "
                                               "drawn at random (one of the item's top-k task types or none) and "
                                               "report how often the embedding's top-1 agrees."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --label-sample draw."),
    endpoint: str | None = typer.Option(None, "--endpoint", "-e", help="Endpoint name from workbench.toml "
                                           "(--label-sample)."),
    label_prompt: str | None = typer.Option(None, "--label-prompt", help="Prompt file for --label-sample "
                                               "(default prompts/audit_label.j2)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="--label-sample: estimate the calls; call nothing."),
    budget: float | None = typer.Option(None, "--budget", help="--label-sample: stop when the spend would "
                                           "pass this (USD)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Print progress per chunk."),
):
    """Assign every item's first instruction to our task types (sentence embeddings, top-k with scores);
    store per-task-type counts, the task types with none, the most over-represented and the long tail."""
    from workbench.analysis.audit import audit, crosstab
    from workbench.analysis.audit import compare as compare_audits
    ws = open_ws(workspace)

    from workbench.analysis.audit_embed import check_backend, default_backend, static_cached

    backend = check_backend(text_backend or default_backend())
    if progress and not as_json:
        typer.echo(f"text backend: {backend}" + ("" if text_backend else " (default; --text-backend to choose)"),
                   err=True)
        if backend == "static" and not static_cached(ws, ws.config.text_embedding.model):
            typer.echo("distilling the static model from the sentence model once for this workspace (1-4 min on "
                       "a CPU; cached in arrays/audit/models/)", err=True)

    def tick(done, total):
        if progress:
            typer.echo(f"  {done:,}/{total:,} items assigned", err=True)

    res = audit(ws, dataset, name=name, fmt=format, task_field=task_field, top_k=top_k, chunk_size=chunk_size,
                min_score=min_score, text_backend=backend, on_chunk=tick)
    s = res.summary
    if images is not False and res.done >= res.items:
        from workbench.analysis import audit_image

        # files first: CLIP (open_clip, torch) is only imported when some image resolves
        src = ws.store.query("SELECT source, format FROM audit_datasets WHERE name=?", (res.name,))[0]
        found = sum(p is not None for p in audit_image.image_paths(Path(src[0]), src[1], image_root))
        why = audit_image.clip_ready(ws) if found or images else None
        if why and images:
            raise WorkbenchError(f"--images: {why}")
        if not why:
            if found:
                if progress and not as_json:
                    typer.echo(f"images: {found:,} of {res.items:,} item(s) have an image file; assigning with "
                               f"CLIP ({ws.config.clip.model})", err=True)
                s["image"] = audit_image.assign_images(ws, res.name, image_root=image_root, top_k=top_k)
                audit_image.store_summary(ws, res.name, s["image"])
            elif images:
                raise WorkbenchError(f"--images: no item's image file resolves (relative to "
                                     f"{image_root or Path(src[0]).parent}); give --image-root")
    cmp = compare_audits(ws, res.name, compare, min_score) if compare else None
    labels, status = None, 0
    if label_sample:
        from workbench.analysis.audit_label import label_agreement
        from workbench.analysis.audit_label import label_sample as run_labels
        from workbench.apps.cli.report import show_run

        report = run_labels(ws, res.name, label_sample, seed=seed, endpoint=endpoint, prompt=label_prompt,
                            dry_run=dry_run, budget_usd=budget, progress=progress and not as_json)
        if as_json:
            labels = {"run": report.as_dict(), "agreement": None if dry_run else label_agreement(ws, res.name)}
        else:
            status = show_run(report, ws.config.limits.max_failure_rate)
            labels = None if dry_run else label_agreement(ws, res.name)
    if as_json:
        out = {"name": res.name, "items": res.items, "resumed_from": res.resumed_from,
               "text_backend": res.text_backend, "summary": s}
        if cmp is not None:
            out["compare"] = cmp[cmp["level"] == 1][["path", "items_a", "items_b", "share_a", "share_b",
                                                      "diff"]].to_dict("records")
        if labels is not None:
            out["labels"] = labels
        typer.echo(json.dumps(out, indent=1, default=float))
        return
    typer.echo(f"{res.name}: {res.items:,} item(s) ({res.resumed_from:,} from an earlier run), {s['assigned']:,} "
               f"assigned to {s['with_items']} of {s['task_types']} task types (top-1 score >= {min_score}), "
               f"{s['unassigned']:,} unassigned; {res.seconds:.1f}s; text backend {res.text_backend}")
    typer.echo("by category: " + ", ".join(f"{k} {v:,}" for k, v in
                                          sorted(s["by_category"].items(), key=lambda kv: -kv[1])))
    typer.echo(f"task types with none: {s['none']}" + (f" (e.g. {', '.join(s['none_paths'][:5])})"
                                                       if s["none"] else ""))
    if s["categories_without_items"]:
        typer.echo("categories with none: " + ", ".join(s["categories_without_items"]))
    typer.echo("most over-represented: " + "; ".join(f"{o['path']} {o['items']:,} ({o['x_uniform']:.1f}x uniform)"
                                                     for o in s["over_represented"][:5]))
    typer.echo(f"long tail: the top 1% of task types ({s['top1pct_task_types']}) hold {s['top1pct_share']:.0%} "
               f"of the assigned items; gini {s['long_tail']['gini']:.2f}")
    im = s.get("image")
    if im and im.get("with_image"):
        typer.echo(f"images: {im['with_image']:,} item(s) assigned by CLIP too; text and image top-1 agree on "
                   f"{im['top1_agree']:.0%} (same category {im['category_agree']:.0%}; image top-1 in the text "
                   f"top-{top_k} {im['image_top1_in_text_topk']:.0%})")
    ct = crosstab(ws, res.name, min_score)
    if not ct.empty:
        typer.echo("own task field x our category (top cells):")
        cells = ct.stack().sort_values(ascending=False)
        for (own, ours), n in cells[cells > 0].head(10).items():
            typer.echo(f"  {own!s:30} -> {ours}: {n:,}")
    if cmp is not None:
        typer.echo(f"compare with {compare} (share of assigned items, per category):")
        top = cmp[cmp["level"] == 1].sort_values("diff", key=abs, ascending=False)
        for _, r in top.head(12).iterrows():
            typer.echo(f"  {r['path']:45} {r['share_a']:6.1%}  {r['share_b']:6.1%}  ({r['diff']:+.1%})")
    if labels and labels.get("answered"):
        pct = lambda v: "n/a" if v is None else f"{v:.0%}"
        typer.echo(f"LLM labels of {labels['answered']} sampled item(s) (all stored for this audit): embedding top-1 = "
                   f"label on {pct(labels['top1'])} of the {labels['labelled']} labelled; label in the top-"
                   f"{top_k} on {pct(labels['topk_hit'])} ({pct(labels['none_share'])} none of them)")
        for cat, f in sorted(labels["by_category"].items(), key=lambda kv: -kv[1]["answered"])[:12]:
            typer.echo(f"  {cat:45} {f['answered']:4} item(s): top-1 {pct(f['top1'])}, in top-{top_k} "
                       f"{pct(f['topk_hit'])}")
    if status:
        raise typer.Exit(status)
