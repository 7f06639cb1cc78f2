#!/usr/bin/env bash
# The GPU checks, as one short script for a machine with a CUDA device: the tests marked `cuda`
# (equivariance and a training step of every backend, sparse/dense/CPU agreement, the simulation
# check, bf16 autocast), then ScaleGMN at the MNIST-INR config (batch 128, every engine) in
# float32 and under bf16 autocast. Results go to ${OUT:-gpu_out}/ (logs, bench JSON and Markdown);
# copy the figures into docs/performance.md ("On a GPU"). Runs from the source tree (PYTHONPATH),
# so it needs torch, torch_geometric, PyYAML, tqdm and pytest, not an installed package.
#   bash scripts/gpu_check.sh            # about 5 minutes on one GPU
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out=${OUT:-gpu_out}
step=${GPU_CHECK_STEP_TIMEOUT:-240}
mkdir -p "$out"
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.cuda.get_device_name(0))' \
  | tee "$out/device.txt" || exit 1
timeout "$step" python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_device.py 2>&1 | tee "$out/cuda_tests.log"
timeout "$step" python3 -m scalegmn.cli bench --paper --out "$out/paper_fp32" 2>&1 | tee "$out/paper_fp32.log"
timeout "$step" python3 -m scalegmn.cli bench --paper --autocast bfloat16 --out "$out/paper_bf16" 2>&1 | tee "$out/paper_bf16.log"
