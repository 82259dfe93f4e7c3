#!/usr/bin/env bash
# Does the package work when installed from its wheel, away from the checkout?
#   bash scripts/wheel_smoke.sh        # uses .venv/bin/python (PYTHON=... to use another)
# 1. builds the wheel from a clean copy of the source (what git would commit: no stale build/),
# 2. installs it with --no-deps into a FRESH venv outside the checkout; that venv sees the
#    dependencies through a .pth line naming .venv's site-packages (no re-install of torch), but
#    not .venv's editable install of the workbench (a plain .pth line does not run the .pth files
#    in that folder, so the editable finder never loads; checked below),
# 3. from a folder outside the checkout: renders every bundled prompt, runs `workbench init --seed`
#    and `workbench expand --dry-run` (they need the seed list and the prompt files), imports the
#    dashboard (without starting a server).
# KEEP=1 keeps the scratch folder for a look afterwards.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wheel-smoke.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then echo "wheel smoke: scratch folder $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
step() { echo "wheel smoke: $*"; }

# -- 1. build ------------------------------------------------------------------------------------
mkdir -p "$WORK/src" "$WORK/dist" "$WORK/run"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked and untracked-but-not-ignored files that exist (a file being moved may be gone).
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
     | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
     | tar --null -T - -cf -) | tar -C "$WORK/src" -xf -
else
  tar -C "$ROOT" --exclude=.git --exclude=.venv --exclude=build --exclude=dist --exclude='*.egg-info' \
      --exclude=__pycache__ -cf - . | tar -C "$WORK/src" -xf -
fi
# setuptools >= 77 (pyproject's build requirement) in the venv builds offline; otherwise pip
# fetches it from the index into an isolated build env.
ISOLATION=(--no-build-isolation)
"$PY" -c 'import sys, setuptools; sys.exit(tuple(map(int, setuptools.__version__.split(".")[:2])) < (77, 0))' \
  2>/dev/null || ISOLATION=()
step "building the wheel"
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps "${ISOLATION[@]}" -w "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/*.whl)
step "built $(basename "$WHEEL")"

# -- 2. a fresh venv with the wheel ---------------------------------------------------------------
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --disable-pip-version-check --no-deps --no-index "$WHEEL"
VSITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$PY" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"]) if p["platlib"] != p["purelib"] else None' \
  > "$VSITE/_workbench_smoke_deps.pth"
step "installed into $WORK/venv"

# -- 3. run it from outside the checkout ----------------------------------------------------------
cd "$WORK/run"
unset PYTHONPATH PYTHONHOME OPENAI_API_KEY OPENAI_BASE_URL WORKBENCH_WORKSPACE
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
export SMOKE_PROMPTS SMOKE_DATA
SMOKE_PROMPTS=$(cd "$ROOT/workbench/prompts" && find . -type f -not -path '*/__pycache__/*' | sed 's|^\./||' | sort)
SMOKE_DATA=$(cd "$ROOT/workbench" && find data -type f -not -path '*/__pycache__/*' | sort)

step "rendering every bundled prompt"
"$VPY" -I - <<'EOF'
import os, sys
from pathlib import Path

import jinja2
import jinja2.meta
import workbench
from workbench.llm.prompts import DEFAULT_PROMPTS_DIR, PromptTemplate

venv, pkg = Path(sys.prefix).resolve(), Path(workbench.__file__).resolve().parent
assert pkg.is_relative_to(venv), f"workbench imported from {pkg}, not from the fresh venv {venv}"
leaks = [f for f in sys.meta_path if "editable" in repr(f).lower()]
assert not leaks, f"an editable install's finder leaked into the fresh venv: {leaks}"
assert DEFAULT_PROMPTS_DIR == pkg / "prompts", f"bundled prompts at {DEFAULT_PROMPTS_DIR}, expected {pkg / 'prompts'}"

expected = set(os.environ["SMOKE_PROMPTS"].split("\n")) - {""}
shipped = {str(p.relative_to(DEFAULT_PROMPTS_DIR)) for p in DEFAULT_PROMPTS_DIR.rglob("*") if p.is_file()}
assert expected <= shipped, f"prompts missing from the wheel: {sorted(expected - shipped)}"
data = set(os.environ["SMOKE_DATA"].split("\n")) - {""}
missing = sorted(d for d in data if not (pkg / d).is_file())
assert not missing, f"data files missing from the wheel: {missing}"

# Realistic values for the variables the stages pass; any other variable gets a string, which
# also iterates and indexes, so a new prompt renders here without editing this script.
known = {"sep": "~", "level": 2, "parent": "Counting", "parent_path": "Perception~Counting",
         "existing": ["Object counting"], "candidates": ["Perception~Counting~Object counting"],
         "task_types": ["Perception~Counting~Object counting"], "task_type": "Perception~Counting",
         "question": "How many cups are on the table?", "answer": "Three.",
         "nearest": [{"path": "Perception~Counting~Object counting", "score": 0.42}],
         "parents": ["Perception~Counting"], "siblings": ["Object counting"], "size": 12}
names = sorted(n for n in expected if n.endswith(".j2"))
assert names, "no bundled prompts (*.j2) found"
for name in names:
    tpl = PromptTemplate.load(name)   # by name, as the stages load their defaults
    assert tpl.path == DEFAULT_PROMPTS_DIR / name and tpl.display_path == f"prompts/{name}", tpl.path
    variables = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(tpl.source))
    msgs = tpl.render(images=["data:image/png;base64,AAAA"], **{v: known.get(v, "sample") for v in variables})
    assert msgs and msgs[-1]["role"] == "user", (name, msgs)
    print(f"  {name}: {len(msgs)} message(s), hash {tpl.hash}")
EOF

step "workbench init + expand --dry-run"
WB="$WORK/venv/bin/workbench"
"$WB" --version
"$WB" init --seed ws
for level in 1 2; do
  out=$("$WB" expand ws --level "$level" --dry-run --no-progress 2>&1) || { echo "$out"; exit 1; }
  echo "$out" | sed 's/^/  /'
  echo "$out" | grep -q "dry run" || { echo "wheel smoke: expand --level $level printed no dry-run summary" >&2; exit 1; }
done
script=$("$WB" dashboard ws --print-command | grep -o '[^ ]*streamlit_app\.py')
case "$script" in "$WORK/venv/"*) ;; *) echo "wheel smoke: dashboard script $script is not in the fresh venv" >&2; exit 1 ;; esac
[ -f "$script" ]

step "importing the dashboard"
"$VPY" -I - <<'EOF'
from pathlib import Path

import streamlit.logger

streamlit.logger.set_log_level("error")   # not "No runtime found" once per cached function
import workbench.apps.dashboard.shell  # noqa: F401  (the entry script's module)
from workbench.apps.dashboard.data import prompt_files_paths
from workbench.apps.dashboard.registry import PAGES
from workbench.llm.prompts import DEFAULT_PROMPTS_DIR
from workbench.core.workspace import Workspace

for page in PAGES:
    page.load()
ws = Workspace.open(Path("ws"))
try:
    listed = {p.name for p in prompt_files_paths(ws) if p.parent == DEFAULT_PROMPTS_DIR}
finally:
    ws.close()
assert listed == {p.name for p in DEFAULT_PROMPTS_DIR.glob("*.j2")}, listed
print(f"  dashboard modules import; its prompts page lists {len(listed)} bundled prompts")
EOF
step "ok"
