#!/usr/bin/env bash
# The test command: sets up (idempotent) and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
exec timeout 4800 .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
