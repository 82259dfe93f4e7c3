#!/usr/bin/env bash
# The test command: sets up (idempotent), runs the gates (scripts/lint.sh: ruff, import layers, mypy),
# smoke-tests the built wheel and runs the whole suite.
#   bash scripts/test.sh            # everything (what CI runs)
#   bash scripts/test.sh --quick    # the gates and the unit tests (not those marked integration): ~1.5 minutes
# Extra arguments go to pytest (e.g. bash scripts/test.sh tests/test_store.py -x).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; shift; fi
if [ "$QUICK" = 0 ]; then
  bash scripts/setup.sh --browser
elif ! { .venv/bin/python -c "import workbench.apps.cli.main" && [ -x .venv/bin/ruff ] && [ -x .venv/bin/mypy ] \
         && [ -x .venv/bin/lint-imports ]; } >/dev/null 2>&1; then
  bash scripts/setup.sh   # the quick lane sets up only where nothing is installed yet (~30 s saved)
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
timeout 900 bash scripts/lint.sh
if [ "$QUICK" = 1 ]; then
  exec timeout 600 .venv/bin/python -m pytest -q -p no:cacheprovider -m "not integration" "$@"
fi
# The wheel, installed into a fresh venv and run from outside the checkout (~15 s); WHEEL_SMOKE=0 skips it.
if [ "${WHEEL_SMOKE:-1}" != 0 ]; then
  timeout 600 bash scripts/wheel_smoke.sh
fi
exec timeout 4800 .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
