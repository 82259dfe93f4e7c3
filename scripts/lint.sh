#!/usr/bin/env bash
# The gates: ruff (style, imports, bugbear, pyupgrade), the import layers and acyclicity (import-linter, contracts
# in pyproject.toml) and mypy on the lower layers. Run by scripts/test.sh; alone: bash scripts/lint.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
echo "lint: ruff check"
"$BIN/ruff" check --quiet .
echo "lint: import layers (lint-imports)"
"$BIN/lint-imports" --no-cache 2>&1 | grep -E "KEPT|BROKEN|Contracts:|->|is not allowed|^- " || true
"$BIN/lint-imports" --no-cache >/dev/null
echo "lint: mypy (core, models, llm, taxonomy, stages)"
"$BIN/mypy" --no-error-summary --hide-error-context
echo "lint: ok"
