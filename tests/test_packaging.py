"""The built wheel holds everything the package reads at run time, not only what a checkout has.

The bundled prompts live in workbench/prompts/ (the top-level prompts/ links to it) and ship with the package;
scripts/wheel_smoke.sh goes further and runs the installed wheel from outside the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import workbench
from workbench.llm.prompts import DEFAULT_PROMPTS_DIR, PromptTemplate

REPO = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache"}


def _files(folder: Path) -> list[Path]:
    """Every file under `folder`, relative to it, without caches."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        out += [(Path(dirpath) / f).relative_to(folder) for f in filenames if not f.endswith(".pyc")]
    return sorted(out)


def _source_files() -> list[Path]:
    """What a commit would hold: tracked and not-ignored untracked files (all files without git)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True, timeout=60).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return _files(REPO)
    return [Path(f) for f in out.split("\0") if f and (REPO / f).is_file()]


def test_pyproject_finds_packages_and_reads_one_version():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    find = cfg["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["workbench*"] and find["namespaces"] is True
    assert "version" not in cfg["project"] and "version" in cfg["project"]["dynamic"]
    assert cfg["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "workbench.__version__"}


def test_bundled_prompts_resolve_in_a_checkout():
    # A checkout or `pip install -e .`: the package is ./workbench, the prompts are ./workbench/prompts.
    if not Path(workbench.__file__).resolve().is_relative_to(REPO):
        pytest.skip("workbench is imported from an installed wheel, not this checkout")
    assert isinstance(DEFAULT_PROMPTS_DIR, Path) and DEFAULT_PROMPTS_DIR == (REPO / "workbench" / "prompts").resolve()
    for path in sorted(DEFAULT_PROMPTS_DIR.glob("*.j2")):
        tpl = PromptTemplate.load(path.name)
        assert tpl.path == path and tpl.display_path == f"prompts/{path.name}"


def test_the_wheel_ships_prompts_data_and_every_module(tmp_path):
    src, dist = tmp_path / "src", tmp_path / "dist"
    for rel in _source_files():   # a clean copy: no stale build/ folder can add or hide files
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes((REPO / rel).read_bytes())
    try:
        import setuptools
        offline = tuple(map(int, setuptools.__version__.split(".")[:2])) >= (77, 0)
    except ImportError:
        offline = False
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps", "-w", str(dist),
           str(src)] + (["--no-build-isolation"] if offline else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [wheel] = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))

    prompts = [f"workbench/prompts/{p.as_posix()}" for p in _files(REPO / "workbench" / "prompts")]
    data = [f"workbench/data/{p.as_posix()}" for p in _files(REPO / "workbench" / "data")]
    modules = [f"workbench/{p.as_posix()}" for p in _files(REPO / "workbench") if p.suffix == ".py"]
    assert any(p.endswith(".j2") for p in prompts) and data and "workbench/apps/dashboard/streamlit_app.py" in modules
    for kind, expected in (("prompts", prompts), ("data files", data), ("modules", modules)):
        missing = sorted(set(expected) - names)
        assert not missing, f"{kind} missing from {wheel.name}: {missing}"
    strays = sorted(n for n in names if not n.startswith(("workbench/", "taskgalaxy_workbench-")))
    assert not strays, f"files outside the workbench package in the wheel: {strays}"
    assert "workbench = workbench.apps.cli.main:entrypoint" in entry_points
