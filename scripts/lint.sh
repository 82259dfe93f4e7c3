#!/usr/bin/env bash
# The gates: ruff (style, imports, bugbear, pyupgrade), the import layers and acyclicity (import-linter, contracts
# in pyproject.toml) and mypy on the lower layers. Run by scripts/test.sh; alone: bash scripts/lint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
echo "lint: ruff check"
"$BIN/ruff" check --quiet .
echo "lint: import layers and cycles (lint-imports)"
if ! out=$("$BIN/lint-imports" --no-cache 2>&1); then echo "$out"; exit 1; fi
echo "$out" | grep "Contracts:"
echo "lint: mypy (core, models, llm, taxonomy, stages)"
"$BIN/mypy" --no-error-summary --hide-error-context
echo "lint: ok"
