"""CLI: `workbench demo` — a workspace from the seed tasks and real photographs, opened in the dashboard."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from workbench.apps.cli.app import app
from workbench.apps.cli.dashboard import dashboard
from workbench.apps.demo import run_demo


@app.command()
def demo(
    directory: Path = typer.Argument(Path("demo-workspace"), help="Workspace folder for the demo (created or "
                                     "reused)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not start the dashboard; print the command "
                                    "that does."),
    base_url: str | None = typer.Option(None, "--base-url", help="An OpenAI-compatible endpoint to expand the "
                                           "taxonomy with (default: [endpoints.default], OPENAI_BASE_URL, or a local "
                                           "server on the usual ports)."),
    model: str | None = typer.Option(None, "--model", help="Model name at --base-url."),
    budget: float = typer.Option(0.5, "--budget", help="Most USD the demo may spend on LLM calls."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete DIRECTORY's workspace first and start over."),
    port: int = typer.Option(8501, "--port", help="Dashboard port."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Pull the small model profile without asking (where the "
                             "model hub answers) and run every stage with local models."),
    no_models: bool = typer.Option(False, "--no-models", help="Never pull models; run what runs without them."),
):
    """Build a workspace from the seed tasks and real photographs, run what runs offline, open the dashboard."""
    t0 = time.perf_counter()
    # Ask before a download only where someone can answer; with no terminal the demo does not pull and says how.
    confirm = (lambda q: typer.confirm(q, default=True)) if sys.stdin.isatty() else None
    report = run_demo(directory, base_url=base_url, model=model, fresh=fresh, budget_usd=budget,
                      echo=lambda s: typer.echo(s), models="yes" if yes else "no" if no_models else "ask",
                      confirm=confirm)
    skipped = [s for s in report.steps if not s.ran]
    if skipped:
        typer.echo("\nnot run, and what enables each:")
        for s in skipped:
            typer.echo(f"  - {s.name}: {s.enable}")
    typer.echo(f"\ndemo ready in {time.perf_counter() - t0:.0f}s: {directory}")
    cmd = f"workbench dashboard {directory}"
    if no_browser:
        typer.echo(f"open the dashboard with:  {cmd}   (then http://127.0.0.1:{port})")
        return
    dashboard(directory, port=port, host="127.0.0.1", print_command=False)
