"""CLI: `workbench audit WORKSPACE DATASET`: which of our task types an existing SFT dataset covers;
`workbench audit export WORKSPACE NAME`: one row per audited item (`audit` is a group whose default command is
`run`, so the first form keeps working)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.core import TyperGroup

from workbench.analysis.audit_run import EXPORT_FORMATS, export_items, item_rows, report_lines, run_audit
from workbench.apps.cli.app import COMMANDS, WS_ARG, app, open_ws
from workbench.apps.cli.report import show_run
from workbench.taxonomy.model import task_type_counts


class RunByDefault(TyperGroup):
    """A group whose first argument, when it names no subcommand, belongs to `run`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]
        return super().parse_args(ctx, args)


audit_app = typer.Typer(cls=RunByDefault, help=COMMANDS["audit"][1], no_args_is_help=True, rich_markup_mode=None)
app.add_typer(audit_app, name="audit")


@audit_app.command("run")
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
    replace: bool = typer.Option(False, "--replace", help="Replace a stored audit of this --name made from other "
                                 "data or settings (without it such an audit is kept and this one refused)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    items: bool = typer.Option(False, "--items", help="With --json: also one row per item (id, instruction, "
                               "image, own task field, top-k task types and scores, confidence)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Print progress per chunk."),
):
    """Assign every item's instruction to our task types (sentence embeddings of its first turn, with context
    when that is short, and the dataset's own task field as evidence; top-k with scores); store per-task-type
    counts, the task types with none, the most over-represented and the long tail."""
    ws = open_ws(workspace)
    notes = progress and not as_json      # stderr notes; --json keeps stdout to the JSON alone

    def tick(done, total):
        typer.echo(f"  {done:,}/{total:,} items assigned", err=True)

    run = run_audit(ws, dataset, name=name, fmt=format, task_field=task_field, top_k=top_k, chunk_size=chunk_size,
                    min_score=min_score, text_backend=text_backend, images=images, image_root=image_root,
                    replace=replace, compare_with=compare, label_sample=label_sample, seed=seed, endpoint=endpoint,
                    label_prompt=label_prompt, dry_run=dry_run, budget_usd=budget,
                    note=(lambda s: typer.echo(s, err=True)) if notes else None,
                    on_chunk=tick if progress else None, label_progress=notes)
    if as_json:
        out = run.as_dict()
        if items:
            out["items"] = item_rows(ws, run.result.name, min_score)
        typer.echo(json.dumps(out, indent=1, default=float))
        return
    status = show_run(run.labels_run, ws.config.limits.max_failure_rate) if run.labels_run is not None else 0
    for line in report_lines(ws, run):
        typer.echo(line)
    typer.echo(task_type_counts(ws).line())   # the task types items were assigned to
    if status:
        raise typer.Exit(status)


@audit_app.command("export")
def export_cmd(
    workspace: Path = WS_ARG,
    name: str = typer.Argument(..., help="The stored audit (`workbench audit ... --name`).", show_default=False),
    format: str = typer.Option("csv", "--format", "-f", help="csv, parquet or jsonl."),
    out: Path | None = typer.Option(None, "--out", "-o", help="The file to write (default: NAME-items.FORMAT "
                                    "in the current folder)."),
    category: str | None = typer.Option(None, "--category", help="Only items whose top-1 is in this first-level "
                                        "category (or `(unassigned)`)."),
    task_type: str | None = typer.Option(None, "--task-type", help="Only items whose top-1 is this task type "
                                         "(node id or path)."),
    min_score: float = typer.Option(0.25, "--min-score", min=0, max=1, help="Top-1 score below which an item "
                                    "counts as unassigned."),
):
    """Write one row per audited item: item index and id, instruction, image, own task field, top-1 and top-k
    task types with scores, confidence."""
    ws = open_ws(workspace)
    if format not in EXPORT_FORMATS:
        raise typer.BadParameter(f"{format!r}: use one of {', '.join(EXPORT_FORMATS)}", param_hint="--format")
    path, rows = export_items(ws, name, out or Path(f"{name}-items.{format}"), format, category=category,
                              task_type=task_type, min_score=min_score)
    typer.echo(f"{path}: {rows:,} item(s)")
