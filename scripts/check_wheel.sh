#!/usr/bin/env bash
# Build the sdist and, from it, the wheel; install the wheel into a fresh virtual environment outside the
# source tree, and run the installed-package smoke test there. Used by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
src=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$PY -c 'import build' 2>/dev/null || $PY -m pip install -q build
$PY -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
ls "$work/dist"
$PY -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip > /dev/null
"$work/venv/bin/python" -m pip install -q torch==2.13.0     # the CPU build, as scripts/install.sh
"$work/venv/bin/python" -m pip install -q "$work"/dist/*.whl
cp scripts/smoke_installed.py "$work/smoke_installed.py"
(cd "$work" && OMP_WAIT_POLICY=PASSIVE "$work/venv/bin/python" smoke_installed.py "$src")
