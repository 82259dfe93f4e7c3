"""`workbench models list | pull | verify`: the model profiles in the Hugging Face hub cache."""

from __future__ import annotations

import sys

import typer

from workbench.apps.cli.app import app
from workbench.models import hub
from workbench.models.profiles import PROFILES, get_profile

models_app = typer.Typer(help="Pull, list and verify the models of a profile (small: CPU, paper: the paper's).",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")

PROFILE_OPT = typer.Option("small", "--profile", help="small (every stage on a laptop CPU) or paper.")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


@models_app.command("list")
def models_list(profile: str = typer.Option(None, "--profile", help="Only this profile (default: all).")):
    """What each profile holds, what is in the hub cache, its size and the stages it enables."""
    profiles = [get_profile(profile)] if profile else list(PROFILES.values())
    typer.echo(f"hub cache: {hub.hub_cache_dir()}   hub: {hub.hub_endpoint()}")
    for prof in profiles:
        typer.echo(f"\nprofile {prof.name}: {prof.description}")
        for m in prof.models:
            present = hub.is_present(m)
            state = f"present  {_mb(hub.size_bytes(m)):>9}" if present else f"missing  ~{_mb(m.download_mb * 10**6):>8}"
            typer.echo(f"  {m.role:<5} {m.repo_id:<44} {state}  enables: {m.enables}")
        for line in prof.served:
            typer.echo(f"  {line}")
        if not all(hub.is_present(m) for m in prof.models):
            typer.echo(f"  to pull: workbench models pull --profile {prof.name}")


@models_app.command("pull")
def models_pull(profile: str = PROFILE_OPT,
                yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before downloading.")):
    """Download (or resume) a profile's models into the hub cache and check every file's hash."""
    prof = get_profile(profile)
    reports = [hub.verify(m) for m in prof.models]
    todo = [r.spec for r in reports if not r.ok]
    if not todo:
        typer.echo(f"profile {prof.name}: every model is present and verified")
        return
    total = sum(m.download_mb for m in todo)
    if not yes:
        if not sys.stdin.isatty():
            typer.echo(f"would download ~{total:,} MB; no terminal to confirm: run `workbench models pull --profile "
                       f"{prof.name} --yes`")
            raise typer.Exit(1)
        if not typer.confirm(f"download ~{total:,} MB from {hub.hub_endpoint()} into {hub.hub_cache_dir()}?",
                             default=True):
            raise typer.Exit(1)
    for r in reports:      # damaged or uncheckable files go first, so this pull fetches them anew
        hub.remove_files(r.spec, [f for f, _ in r.bad + r.unchecked])
    for m in todo:
        typer.echo(f"pulling {m.repo_id} ({m.role}: {m.enables})")
        path = hub.pull(m)
        typer.echo(f"  ok: {_mb(hub.size_bytes(m))} verified at {path}")
    for line in prof.served:
        typer.echo(line)


@models_app.command("verify")
def models_verify(profile: str = PROFILE_OPT):
    """Recompute the hash of every pulled file and compare it with the hub's (offline). Exit 1 on a mismatch or a
    file that cannot be checked."""
    prof = get_profile(profile)
    bad = False
    for m in prof.models:
        rep = hub.verify(m)
        if rep.path is None:
            typer.echo(f"missing  {m.repo_id}  (workbench models pull --profile {prof.name})")
            continue
        if rep.ok:
            typer.echo(f"ok       {m.repo_id}  {len(rep.checked)} files match the hub's hashes")
            continue
        bad = True
        for f, why in rep.bad:
            typer.echo(f"CORRUPT  {m.repo_id}/{f}: {why}")
        for f, why in rep.unchecked:
            typer.echo(f"UNCHECKED {m.repo_id}/{f}: {why}")
        if rep.missing:
            typer.echo(f"INCOMPLETE {m.repo_id}: nothing matches {', '.join(rep.missing)}")
        typer.echo(f"  repair: workbench models pull --profile {prof.name} (deletes and fetches the bad files; "
                   f"{len(rep.checked)} other file(s) match)")
    if bad:
        raise typer.Exit(1)
