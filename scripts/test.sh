#!/usr/bin/env bash
# Install, then run the default test suite (slow tests: python -m pytest -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec ${PYTHON:-python3} -m pytest -q -m "not slow" --durations=10 "$@"
