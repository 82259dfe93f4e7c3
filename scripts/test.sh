#!/usr/bin/env bash
# The test command: sets up (idempotent), smoke-tests the built wheel and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
# The wheel, installed into a fresh venv and run from outside the checkout (~15 s); WHEEL_SMOKE=0 skips it.
if [ "${WHEEL_SMOKE:-1}" != 0 ]; then
  timeout 600 bash scripts/wheel_smoke.sh
fi
exec timeout 4800 .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
