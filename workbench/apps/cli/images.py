"""CLI: `workbench images add|report`, `workbench embed`, `workbench match`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from workbench.apps.cli.app import WS_ARG, app, open_ws
from workbench.engine import session
from workbench.stages.embed.stage import embed_images, embed_texts_clip
from workbench.stages.images.register import images_report, register_images
from workbench.stages.match.stage import low_score_images, match, tasks_without_images
from workbench.taxonomy.model import task_type_counts

images_app = typer.Typer(help="Register images and list the files that could not be used.", no_args_is_help=True,
                         rich_markup_mode=None)
app.add_typer(images_app, name="images")


@images_app.command("add")
def images_add(
    workspace: Path = WS_ARG,
    paths: list[Path] = typer.Argument(..., help="Image folders (searched recursively), image files, or LLaVA "
                                       "JSON/JSONL manifests.", show_default=False),
    root: Path | None = typer.Option(None, "--root", help="Folder that manifest image paths are relative to "
                                        "(default: the manifest's folder; for folders: the folder itself). "
                                        "Paths escaping it are refused."),
    source: str | None = typer.Option(None, "--source", help="Name recorded as the images' source "
                                         "(default: the folder name or the manifest's file name)."),
    refresh: bool = typer.Option(False, "--refresh", help="Register the new content of files changed since "
                                 "registration under new ids (ids are content hashes); their old ids, and the "
                                 "matches, filter decisions and samples made from the old content, are removed. "
                                 "Without it a changed file is reported and left as it was registered."),
):
    """Register images; bad files are recorded with their reason and skipped."""
    ws = open_ws(workspace)
    report = register_images(ws, paths, root=root, source=source, refresh=refresh)
    typer.echo(report.summary())
    for p in report.problems[:20]:
        typer.echo(f"  skipped {p.path}: {p.reason}")
    if len(report.problems) > 20:
        typer.echo(f"  ... and {len(report.problems) - 20} more (`workbench images report {workspace}`)")


@images_app.command("report")
def images_report_cmd(
    workspace: Path = WS_ARG,
    limit: int = typer.Option(200, help="Show at most this many problem files."),
    check: bool = typer.Option(True, "--check/--no-check", help="Stat every registered file to find files "
                               "changed or missing since registration (one stat per image; a changed mtime is "
                               "confirmed by hashing the file)."),
):
    """Images per source, imported datasets, every file that could not be registered (with why), and
    registered files changed or missing since registration."""
    ws = open_ws(workspace)
    rep = images_report(ws, check_files=check)
    typer.echo(f"{rep['images']} image(s)")
    for s in rep["per_source"]:
        typer.echo(f"  {s['source']}: {s['images']} image(s), {(s['bytes'] or 0) / 2**20:.1f} MiB")
    for d in rep["datasets"]:
        typer.echo(f"  dataset {d['source']}: {d['items']} item(s), {d['with_image']} with a registered image, "
                   f"{d['with_task']} with a task name")
    stale = rep["changed"] + rep["missing"]
    if check:
        typer.echo(f"{len(rep['changed'])} registered file(s) changed since registration, "
                   f"{len(rep['missing'])} missing")
        for p in stale[:limit]:
            typer.echo(f"  [{p['source']}] {Path(p['root']) / p['path']}: {p['reason']}")
    shown = {(p["root"], p["path"]) for p in stale}
    problems = [p for p in rep["problems"] if (p["root"], p["path"]) not in shown]
    typer.echo(f"{len(problems)} problem file(s)" + (" (besides those)" if shown else ""))
    for p in problems[:limit]:
        typer.echo(f"  [{p['source']}] {Path(p['root']) / p['path']}: {p['reason']}")


ENGINE = typer.Option("local", "--engine", help="local (this process) or ray: Ray Data decodes the images and an "
                      "actor pool runs CLIP (a private loopback Ray, or the cluster at --address); rows are "
                      "committed here. Workers must read the images at their registered paths.")
ADDRESS = typer.Option(None, "--address", help="With --engine ray: join this Ray cluster (host:6379 or "
                       "ray://host:10001; default: start a private local Ray).")


@app.command("embed")
def embed_cmd(
    workspace: Path = WS_ARG,
    texts: bool = typer.Option(True, "--texts/--no-texts", help="Embed the task types' texts."),
    images: bool = typer.Option(True, "--images/--no-images", help="Embed the registered images."),
    engine: str = ENGINE,
    address: str | None = ADDRESS,
):
    """CLIP-embed task types and images with the model in workbench.toml [clip] (cached; resumable)."""
    ws = open_ws(workspace)
    with session(engine, address):
        if texts:
            typer.echo(embed_texts_clip(ws, progress=_progress("texts")).summary())
        if images:
            typer.echo(embed_images(ws, progress=_progress("images")).summary())


@app.command("match")
def match_cmd(
    workspace: Path = WS_ARG,
    k: int | None = typer.Option(None, "--k", help="Task types kept per image (default: [match] k)."),
    engine: str = ENGINE,
    address: str | None = ADDRESS,
):
    """Top-k task types per image by cosine similarity (embeds what is missing first; incremental)."""
    ws = open_ws(workspace)
    with session(engine, address):
        t = embed_texts_clip(ws, progress=_progress("texts"))
        if t.computed or t.truncated:
            typer.echo(t.summary())
        i = embed_images(ws, progress=_progress("images"))
        if i.computed or i.problems:
            typer.echo(i.summary())
        report = match(ws, k=k, embed=False)
    typer.echo(report.summary())
    typer.echo(task_type_counts(ws).line())
    typer.echo(f"{len(tasks_without_images(ws))} task type(s) have no image; "
               f"{len(low_score_images(ws))} image(s) have a best score below "
               f"{ws.config.match.low_score_threshold}")


def _progress(what: str):
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        typer.echo(f"\r{what}: {done}/{total}", err=True, nl=done >= total)

    return show
