#!/usr/bin/env bash
# The GPU checks, as one short script for a machine with a CUDA device: the tests marked `cuda`
# (equivariance and a training step of every backend, sparse/dense/CPU agreement, the simulation
# check, bf16 autocast), then ScaleGMN at the MNIST-INR config (batch 128, every engine) in
# float32 and under bf16 autocast. Results go to ${OUT:-gpu_out}/ (logs, bench JSON and Markdown);
# copy the figures into docs/performance.md ("On a GPU").
#   bash scripts/gpu_check.sh            # about 5-10 minutes on one GPU
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}
mkdir -p "$out"
python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name(0))' \
  | tee "$out/device.txt" || exit 1
python3 -m pytest -q -m cuda tests/test_device.py 2>&1 | tee "$out/cuda_tests.log"
scalegmn bench --paper --out "$out/paper_fp32" 2>&1 | tee "$out/paper_fp32.log"
scalegmn bench --paper --autocast bfloat16 --out "$out/paper_bf16" 2>&1 | tee "$out/paper_bf16.log"
