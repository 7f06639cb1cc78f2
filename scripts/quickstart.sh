#!/usr/bin/env bash
# Install, then run the main job end to end on the built-in default data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec scalegmn quickstart "$@"
