"""The CLI starts without importing what its commands drive: `--help` lists the commands from the table in
workbench/apps/cli/app.py (`COMMANDS`), a command imports only its own module, and `doctor` imports none of the
heavy packages it checks. What is asserted is which modules get imported, in a fresh interpreter each time, not
how long it takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli
from workbench.apps.cli.app import COMMANDS

pytestmark = pytest.mark.timeout(120)

RUN = """
import json, sys
from workbench.apps.cli.main import main
code = main(sys.argv[1:])
print()
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

HEAVY = ("pandas", "numpy", "jinja2", "openai", "torch", "torchvision", "open_clip", "transformers", "sklearn",
         "umap", "streamlit", "ray", "pyarrow", "jupyterlab", "PIL")
COMMAND_MODULES = sorted({module for module, _ in COMMANDS.values()} - {"app"})


def _run(*args: str, env: dict | None = None) -> tuple[int, set[str]]:
    proc = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, timeout=100,
                          stdin=subprocess.DEVNULL, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["code"], set(result["modules"])


def _loaded_command_modules(modules: set[str]) -> set[str]:
    return {m for m in COMMAND_MODULES if f"workbench.apps.cli.{m}" in modules}


@pytest.mark.parametrize("args,code", [(["--help"], 0), (["-h"], 0), ([], 2), (["--version"], 0),
                                       (["taxonomy", "--help"], 0), (["taxonomy"], 2)])
def test_help_imports_no_command_module_nor_the_library(args, code):
    got, modules = _run(*args)
    assert got == code
    assert _loaded_command_modules(modules) == set()
    assert not [m for m in modules if m.split(".")[0] in HEAVY]
    layers = ("workbench.stages", "workbench.analysis", "workbench.review", "workbench.engine", "workbench.llm",
              "workbench.taxonomy", "workbench.models")
    assert not [m for m in modules if m.startswith(layers)]


@pytest.mark.parametrize("args,loaded", [
    (["taxonomy", "stats", "--help"], {"taxonomy"}),
    (["taxonomy", "undo", "--help"], {"review"}),
    (["taxonomy", "coverage", "--help"], {"expand"}),
    (["images", "--help"], {"images"}),
    (["funnel", "--help"], {"vision"}),
    (["doctor", "--help"], {"doctor"}),
])
def test_a_command_imports_its_own_module_only(args, loaded):
    code, modules = _run(*args)
    assert code == 0
    assert _loaded_command_modules(modules) == loaded


def test_doctor_imports_none_of_the_packages_it_checks():
    env = {**os.environ, "WORKBENCH_NO_LOCAL_PROBE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("OPENAI_BASE_URL", None)
    code, modules = _run("doctor", env=env)
    assert code == 0
    assert not [m for m in modules if m.split(".")[0] in ("torch", "torchvision", "open_clip", "transformers",
                                                           "umap", "streamlit", "jupyterlab", "sklearn", "ray")]


OWNERS = """
import importlib, json, sys
import typer.main
from workbench.apps.cli.app import COMMANDS, NotLoaded, app

def registered():
    root = typer.main.get_command(app)
    found = {name: cmd for name, cmd in root.commands.items() if not isinstance(cmd, NotLoaded)}
    for group in ("taxonomy", "gaps"):
        found.update({f"{group} {name}": cmd for name, cmd in root.commands[group].commands.items()
                      if not isinstance(cmd, NotLoaded)})
    return found

owners = {path: ["app", cmd.get_short_help_str(10**6)] for path, cmd in registered().items()}
for module in sorted({module for module, _ in COMMANDS.values()} - {"app"}):
    importlib.import_module("workbench.apps.cli." + module)
    for path, cmd in registered().items():
        owners.setdefault(path, [module, cmd.get_short_help_str(10**6)])
print(json.dumps(owners))
"""


def test_the_command_table_is_what_the_modules_register():
    """COMMANDS cannot drift: importing its modules one by one (in a fresh interpreter) registers exactly its
    commands, each by the module the table names, with the table's help (the first sentence of the docstring)."""
    proc = subprocess.run([sys.executable, "-c", OWNERS], capture_output=True, text=True, timeout=100,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    owners = {path: tuple(entry) for path, entry in json.loads(proc.stdout).items()}
    assert owners == COMMANDS


def test_the_listing_is_the_same_whether_or_not_the_modules_are_loaded():
    """In this process the modules may be loaded already (other tests); the help lists them in the same order,
    with the same help, as a fresh interpreter that loads none."""
    fresh = subprocess.run([sys.executable, "-c", RUN, "--help"], capture_output=True, text=True, timeout=100,
                           stdin=subprocess.DEVNULL)
    run_cli("funnel", "--help")     # loads vision.py here
    here = run_cli("--help")
    assert here.code == 0 and fresh.stdout.startswith(here.out)
    assert [line.split()[0] for line in here.out.split("Commands:\n")[1].splitlines()] == \
        [path for path in COMMANDS if " " not in path]


def test_a_stale_table_entry_is_a_bug_not_a_silent_success(monkeypatch):
    monkeypatch.setitem(COMMANDS, "ghost", ("runs", "A command no module registers."))
    assert "ghost" in run_cli("--help").out
    with pytest.raises(RuntimeError, match="registers no command 'ghost'"):
        run_cli("ghost")
