"""The code's shape, checked: ARCHITECTURE.md's Layout is the tree, no function runs over 100 lines, and the
package's own modules are imported at the top of each file (the import graph is visible; import-linter checks its
layers and cycles in scripts/lint.sh)."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "workbench"
MAX_FUNCTION_LINES = 100


def _layout_script():
    spec = importlib.util.spec_from_file_location("layout", REPO / "scripts" / "layout.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_architecture_layout_is_the_tree():
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1] if "\n## Layout\n" in text else ""
    block = re.search(r"^```\n(.*?)^```", section, re.S | re.M)
    assert block, "ARCHITECTURE.md has no ## Layout section with a code block"
    assert block.group(1).rstrip("\n") == _layout_script().layout(), \
        "ARCHITECTURE.md's Layout is out of date: paste the output of `python scripts/layout.py` into it"


def test_no_function_over_100_lines():
    long = [f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, tree in _modules() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "split these functions: " + "; ".join(long)


def test_own_modules_are_imported_at_the_top():
    """Own imports inside functions hide the graph. Allowed only where the import guards a cycle or a heavy
    library and says so on the line (a comment naming the reason)."""
    hidden = []
    for path, tree in _modules():
        lines = path.read_text(encoding="utf-8").splitlines()
        in_functions = {id(n): n for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for n in ast.walk(f) if isinstance(n, ast.ImportFrom)}
        for node in in_functions.values():
            if (not node.level and (node.module or "").startswith("workbench")
                    and "# lazy:" not in lines[node.lineno - 1]):
                hidden.append(f"{path.relative_to(REPO)}:{node.lineno} from {node.module}")
    assert not hidden, ("import these at the top of the file (or mark a needed lazy import with "
                        "`# lazy: <reason>`): " + "; ".join(hidden))
