import pytest

from conftest import run_cli, run_cli_subprocess
from workbench.taxonomy.model import Taxonomy


def test_init_with_seed_then_stats_show_export(tmp_path):
    ws = tmp_path / "w"
    r = run_cli("init", ws, "--seed")
    assert r.code == 0 and "loaded seed task types" in r.out
    r = run_cli("taxonomy", "stats", ws)
    assert r.code == 0 and "task types (leaves): 72" in r.out and "largest first-level subtree" in r.out
    r = run_cli("taxonomy", "show", ws, "--depth", "1", "--no-ids")
    assert r.code == 0 and r.out.splitlines()[0].startswith("optical character recognition  (+4 children)")
    r = run_cli("taxonomy", "show", ws, "--node", "optical character recognition~handwriting recognition")
    assert r.code == 0 and "handwriting recognition" in r.out
    out = tmp_path / "tasktype.txt"
    r = run_cli("taxonomy", "export", ws, out)
    assert r.code == 0 and "wrote 72 task types" in r.out
    seed_lines = list((tmp_path / "tasktype.txt").read_text().splitlines())
    assert "ocr" not in seed_lines and "optical character recognition~handwriting recognition" in seed_lines
    r = run_cli("taxonomy", "stats", ws, "--json")
    assert r.code == 0 and '"leaves": 72' in r.out


def test_import_bad_file_lists_lines_and_exits_2(tmp_path):
    ws = tmp_path / "w"
    run_cli("init", ws)
    bad = tmp_path / "bad.txt"
    bad.write_text("ocr~scene text\nocr~a/b\nocr~~x\nocr~scene text\n")
    r = run_cli("taxonomy", "import", ws, bad)
    assert r.code == 2
    err_lines = r.err.strip().splitlines()
    assert any("line 2" in x and "'/'" in x for x in err_lines)
    assert any("line 3" in x and "empty level" in x for x in err_lines)
    assert err_lines[-1].startswith("error: ") and "nothing was imported" in err_lines[-1]
    assert "Traceback" not in r.err
    r = run_cli("taxonomy", "stats", ws)
    assert "empty taxonomy" in r.out
    r = run_cli("taxonomy", "import", ws, bad, "--skip-bad")
    assert r.code == 0 and "skipped 3 bad entries" in r.out
    # Every line bad: --skip-bad has nothing to import, and says so (not a success with 0 nodes).
    allbad = tmp_path / "allbad.txt"
    allbad.write_text("ocr~a/b\nocr~~x\n")
    r = run_cli("taxonomy", "import", ws, allbad, "--skip-bad")
    assert r.code == 2 and "line 1" in r.err and "every entry has an error, so --skip-bad left none" in r.err
    assert "Traceback" not in r.err


def test_edit_commands(tmp_path):
    ws = tmp_path / "w"
    run_cli("init", ws)
    assert run_cli("taxonomy", "add", ws, "ocr~scene text").code == 0
    assert run_cli("taxonomy", "add", ws, "reading~street text").code == 0
    r = run_cli("taxonomy", "rename", ws, "reading", "text reading")
    assert r.code == 0 and "text reading" in r.out
    r = run_cli("taxonomy", "merge", ws, "text reading", "ocr")
    assert r.code == 0
    r = run_cli("taxonomy", "reject", ws, "ocr~street text")
    assert r.code == 0
    r = run_cli("taxonomy", "export", ws, tmp_path / "o.txt")
    assert (tmp_path / "o.txt").read_text() == "ocr~scene text\n"
    r = run_cli("taxonomy", "delete", ws, "ocr")
    assert r.code == 2 and "--yes" in r.err
    r = run_cli("taxonomy", "delete", ws, "ocr", "--yes")
    assert r.code == 0 and "deleted 3 node(s)" in r.out
    r = run_cli("taxonomy", "move", ws, "nope", "ocr")
    assert r.code == 2 and "no node with id or path 'nope'" in r.err


@pytest.mark.parametrize("args,needle", [
    (["taxonomy", "stats", "{tmp}/missing"], "no such workspace folder"),
    (["taxonomy", "import", "{ws}", "{tmp}/missing.txt"], "no such file"),
    (["taxonomy", "export", "{ws}", "{tmp}/x.xml"], "--format"),
    (["taxonomy", "show", "{ws}", "--status", "weird"], "--status must be one of"),
    (["init", "{ws}"], "already a workspace"),
    (["taxonomy", "stats", "{ws}", "--bogus"], "No such option: --bogus"),
    (["taxonomy", "import", "{ws}"], "Missing argument"),
])
def test_user_mistakes_are_one_line_exit_2(tmp_path, args, needle):
    ws = tmp_path / "w"
    run_cli("init", ws)
    r = run_cli(*[a.format(tmp=tmp_path, ws=ws) for a in args])
    assert r.code == 2
    assert r.err.startswith("error: ") and needle in r.err and len(r.err.strip().splitlines()) == 1


def test_every_command_has_help():
    """Walks the commands as click does (list_commands, then get_command, which imports a lazily loaded command's
    module), so every command of every module is reached, loaded or not."""
    import typer.main

    from workbench.apps.cli.app import click
    from workbench.apps.cli.main import app

    root = typer.main.get_command(app)

    def walk(cmd, path, ctx):
        yield path, cmd
        for name in cmd.list_commands(ctx) if hasattr(cmd, "list_commands") else []:
            sub = cmd.get_command(ctx, name)
            yield from walk(sub, path + [name], click.Context(sub, parent=ctx, info_name=name))

    seen = 0
    for path, cmd in walk(root, [], click.Context(root, info_name="workbench")):
        seen += 1
        r = run_cli(*path, "--help")
        assert r.code == 0, path
        for param in cmd.params:
            if param.name != "help" and getattr(param, "param_type_name", "") == "option":
                assert param.help, f"{' '.join(path)} --{param.name} has no help text"
    assert seen > 40   # every command, not only those whose module happened to be imported


def test_console_script_in_a_subprocess(tmp_path):
    r = run_cli_subprocess("init", tmp_path / "w", "--seed")
    assert r.code == 0, r.err
    r = run_cli_subprocess("taxonomy", "import", tmp_path / "w", tmp_path / "nothing.txt")
    assert r.code == 2 and r.err.startswith("error:") and "Traceback" not in r.err
    r = run_cli_subprocess("--version")
    assert r.code == 0 and r.out.startswith("workbench ")


def test_show_proposed_lists_them_under_their_parents(tmp_path):
    ws = tmp_path / "w"
    run_cli("init", ws)
    run_cli("taxonomy", "add", ws, "ocr~scene text")
    run_cli("taxonomy", "add", ws, "ocr~menus", "--status", "proposed")
    r = run_cli("taxonomy", "show", ws, "--status", "proposed", "--no-ids")
    assert r.code == 0 and r.out.splitlines() == ["ocr", "  menus [proposed]"]


IMPORTER = """
import os, sys, time
from workbench.apps.cli import main as cli
go = sys.argv[1]
open(go + "." + str(os.getpid()), "w").close()   # ready
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:   # start both imports at the same moment
    time.sleep(0.001)
sys.exit(cli.main(["taxonomy", "import", *sys.argv[2:]]))
"""


@pytest.mark.timeout(180)
def test_concurrent_imports_report_what_each_inserted(tmp_path):
    """Two processes import overlapping files into one workspace at once: each reports only the nodes its
    own transaction inserted, so no count is negative and the created counts add up to the database."""
    import re
    import subprocess
    import sys
    import time

    from workbench.core.workspace import Workspace

    ws = tmp_path / "w"
    Workspace.init(ws).close()
    files = []
    for tag, lines in (("a", range(0, 6000)), ("b", range(3000, 9000))):
        f = tmp_path / f"{tag}.txt"
        f.write_text("".join(f"group {i % 40}~family {i % 400}~task {i}\n" for i in lines))
        files.append(f)
    expected = {("group", i % 40) for i in range(9000)} | {("family", i % 400) for i in range(9000)} \
        | {("task", i) for i in range(9000)}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", IMPORTER, str(go), str(ws), str(f)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL) for f in files]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)    # both have imported the workbench and wait on `go`
    go.touch()
    created = []
    for p, _f in zip(procs, files):
        out, err = p.communicate(timeout=150)
        assert p.returncode == 0, err
        m = re.search(r"read (\d+) path\(s\) as txt; created (-?\d+) node\(s\), (-?\d+) already present", out)
        assert m, out
        read, made, present = map(int, m.groups())
        assert read == 6000 and made >= 0 and present >= 0, out
        # Each file names 6000 tasks + 400 families + 40 groups; each was either made by this import or there.
        assert made + present == 6000 + 400 + 40, out
        created.append(made)
    with Workspace.open(ws) as w:
        total = Taxonomy.of(w).count()
    assert total == len(expected)
    assert sum(created) == total, (created, total)
