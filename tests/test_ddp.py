"""Data-parallel training under torchrun (2 CPU processes, gloo) matches one process."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from scalegmn.data import generate as G
from scalegmn.data import images as I


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    X, y = I.sklearn_digits()
    G.generate_dwsnets_mnist(root / "data", X[:40], y[:40], np.arange(40) < 32, steps=20,
                             chunk=20, val_size=8, progress=False)
    cfg = {"task": "inr_classification",
           "data": {"format": "dwsnets-mnist", "path": str(root / "data"), "batch_size": 8},
           "model": {"backend": "scalegmn", "hidden": 8, "layers": 2, "dropout": 0.0},
           "train": {"epochs": 2, "lr": 3e-3, "warmup_steps": 1, "progress": False,
                     "dtype": "float64", "threads": 1}}
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    return root


def test_two_processes_match_one(cfg_path):
    run = lambda args: subprocess.run(args, capture_output=True, text=True, timeout=300)
    one = run([sys.executable, "-m", "scalegmn.cli", "train", "--config",
               str(cfg_path / "c.yaml"), "--out", str(cfg_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    two = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", "29517", "--module", "scalegmn.cli", "train", "--config",
               str(cfg_path / "c.yaml"), "--out", str(cfg_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    # only rank 0 prints (the summary, the epochs, the run directory)
    assert one.stdout.count("run directory") == 1
    for text in ("run directory", "trainable parameters", "test accuracy"):
        assert two.stdout.count(text) == 1, (text, two.stdout)
    a = torch.load(cfg_path / "one" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(cfg_path / "two" / "checkpoints" / "last.pt", weights_only=False)["model"]
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-8, worst
    assert (cfg_path / "two" / "summary.json").exists()
