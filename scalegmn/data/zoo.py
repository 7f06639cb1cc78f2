"""The Small CNN Zoo format (Unterthiner et al. 2020): ``weights.npy`` (rows x 4970, TF flat
order), ``layout.csv``, ``metrics.csv.gz`` and a split file; reading and writing.

``weights.npy`` is memory-mapped and only the selected rows are read, so a 5.4 GB file never
loads whole (docs/design.md 8).
"""
from __future__ import annotations

import ast
import csv
import gzip
import logging
import random
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

import converters

from .base import DataError, GraphDataset, register_format

#: (varname, TF shape) of the released zoo's rows, bias before kernel in each layer
ZOO_LAYOUT = [("sequential/conv2d/bias:0", (16,)), ("sequential/conv2d/kernel:0", (3, 3, 1, 16)),
              ("sequential/conv2d_1/bias:0", (16,)),
              ("sequential/conv2d_1/kernel:0", (3, 3, 16, 16)),
              ("sequential/conv2d_2/bias:0", (16,)),
              ("sequential/conv2d_2/kernel:0", (3, 3, 16, 16)),
              ("sequential/dense/bias:0", (10,)), ("sequential/dense/kernel:0", (16, 10))]
METRIC_COLUMNS = ["config.activation", "config.b_init", "config.dataset",
                  "config.dnn_architecture", "config.dropout", "config.epochs",
                  "config.epochs_between_checkpoints", "config.init_std", "config.l2reg",
                  "config.learning_rate", "config.num_layers", "config.num_units",
                  "config.optimizer", "config.random_seed", "config.train_fraction",
                  "config.w_init", "modeldir", "step", "test_accuracy", "test_loss",
                  "train_accuracy", "train_loss"]
_TORCH_KEYS = ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight", "8.bias",
               "8.weight"]


def read_layout(path) -> list:
    """Rows ``(varname, start, end, shape)`` of ``layout.csv``."""
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            try:
                shape = tuple(ast.literal_eval(r["shape"]))
                rows.append((r["varname"], int(r["start_idx"]), int(r["end_idx"]), shape))
            except (KeyError, ValueError, SyntaxError) as e:
                raise DataError(f"'{path}': bad row {r}: {e}") from e
    return rows


def write_layout(path, layout=ZOO_LAYOUT):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["varname", "start_idx", "end_idx", "size", "shape"])
        start = 0
        for name, shape in layout:
            size = int(np.prod(shape))
            w.writerow([name, start, start + size, size, str(tuple(shape))])
            start += size


def row_to_state_dict(row: np.ndarray, layout) -> dict:
    """One TF-flat row -> a PyTorch ``cnn_zoo`` state dict (keys ``0.weight`` ... ``8.bias``)."""
    tensors = []
    for name, start, end, shape in layout:
        t = np.array(row[start:end], dtype=np.float32).reshape(shape)   # a copy: rows may be mmapped
        if name.endswith("kernel:0"):
            t = t.transpose(3, 2, 0, 1) if t.ndim == 4 else t.T   # (kh,kw,in,out)->(out,in,kh,kw)
        tensors.append((name, torch.from_numpy(np.ascontiguousarray(t))))
    if len(tensors) != len(_TORCH_KEYS):
        raise DataError(f"layout has {len(tensors)} tensors, the zoo CNN needs {len(_TORCH_KEYS)}")
    return {key: t for key, (_, t) in zip(_TORCH_KEYS, tensors)}


def state_dict_to_row(sd: dict) -> np.ndarray:
    """The inverse of ``row_to_state_dict`` (for exporters and generators)."""
    parts = []
    for key in _TORCH_KEYS:
        t = sd[key].detach().cpu().numpy().astype(np.float32)
        if key.endswith("weight"):
            t = t.transpose(2, 3, 1, 0) if t.ndim == 4 else t.T
        parts.append(t.reshape(-1))
    return np.concatenate(parts)


def read_metrics(path) -> list:
    """``metrics.csv.gz`` as a list of dicts (gzip CSV, first column possibly unnamed)."""
    try:
        with gzip.open(path, "rt", newline="") as fh:
            return list(csv.DictReader(fh))
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read '{path}': {e}") from e


def write_metrics(path, rows: list):
    with gzip.open(path, "wt", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[""] + METRIC_COLUMNS)
        w.writeheader()
        for i, r in enumerate(rows):
            w.writerow({"": i, **{k: r.get(k, "") for k in METRIC_COLUMNS}})


def read_split_file(path) -> list:
    """A permutation of row indices, one per line, read like ``header=None`` (the official
    file's stray leading ``0`` is kept, so row 0 may appear twice)."""
    out = []
    for ln in Path(path).read_text().split():
        out.append(int(float(ln)))
    return out


class ZooItem(NamedTuple):
    """One network of a zoo: its row of ``weights.npy``, its ``test_accuracy`` and its
    activation (which of the data set's architectures it has)."""
    row: int
    target: float
    activation: str


class ZooDataset(GraphDataset):
    """Rows of a memory-mapped ``weights.npy``; targets are ``test_accuracy``; items are
    ``ZooItem``s."""

    def __init__(self, weights, layout, rows, acts, targets, **kw):
        self.weights, self.layout = weights, layout
        self.archs = {a: converters.arch.cnn_zoo(activation=a) for a in set(acts)}
        items = [ZooItem(int(r), float(t), a) for r, t, a in zip(rows, targets, acts)]
        super().__init__(items, lambda it: self.archs[it.activation], None, name="cnn-zoo",
                         **kw)

    def _state_dict(self, row):
        vals = np.asarray(self.weights[row])
        if not np.isfinite(vals).all():
            raise DataError(f"row {row} of weights.npy has NaN or inf values")
        return row_to_state_dict(vals, self.layout)


@register_format("cnn-zoo")
def cnn_zoo(path, split="train", activation=None, protocol="split_then_filter",
            min_accuracy=None, split_file=None, step=86, **kw) -> ZooDataset:
    """Read a zoo folder (``weights.npy``, ``layout.csv``, ``metrics.csv.gz``, a split file).

    Pipeline (NFN/ScaleGMN): order rows by the split file (default: the folder's
    ``*_split.csv``; identity order if there is none), keep ``step``, then test = second half,
    and the first half shuffled with ``random.Random(0)`` and cut 80/20 into train/val.
    ``protocol="split_then_filter"`` (ScaleGMN) filters by ``activation`` after splitting,
    ``"filter_then_split"`` (Monomial-NFN/MAGEP) before. ``min_accuracy`` drops rows below it.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"missing folder: '{root}'")
    for f in ("weights.npy", "layout.csv", "metrics.csv.gz"):
        if not (root / f).exists():
            raise DataError(f"missing zoo file: '{root / f}'")
    if protocol not in ("split_then_filter", "filter_then_split"):
        raise ValueError("protocol must be 'split_then_filter' or 'filter_then_split'")
    if split not in ("train", "val", "test"):
        raise DataError(f"split must be train, val or test, got {split!r}")
    try:
        weights = np.load(root / "weights.npy", mmap_mode="r")
    except Exception as e:
        raise DataError(f"cannot read '{root / 'weights.npy'}': {e}") from e
    layout = read_layout(root / "layout.csv")
    width = max(end for _, _, end, _ in layout)
    if weights.ndim != 2 or weights.shape[1] != width:
        raise DataError(f"'{root / 'layout.csv'}' describes {width} values per row but "
                        f"'{root / 'weights.npy'}' has shape {weights.shape}")
    metrics = read_metrics(root / "metrics.csv.gz")
    if len(metrics) != weights.shape[0]:
        raise DataError(f"'{root / 'metrics.csv.gz'}' has {len(metrics)} rows, weights.npy "
                        f"{weights.shape[0]}")
    if split_file is None:
        found = sorted(root.glob("*_split.csv"))
        split_file = found[0] if found else None
    order = read_split_file(split_file) if split_file else list(range(len(metrics)))
    act = lambda r: metrics[r]["config.activation"]
    rows = [r for r in order if int(float(metrics[r]["step"])) == step]
    if activation is not None and protocol == "filter_then_split":
        rows = [r for r in rows if act(r) == activation]
    half = len(rows) // 2
    test, rest = rows[half:], rows[:half]
    rest = list(rest)
    random.Random(0).shuffle(rest)
    cut = int(0.8 * len(rest))
    chosen = {"train": rest[:cut], "val": rest[cut:], "test": test}[split]
    if activation is not None and protocol == "split_then_filter":
        chosen = [r for r in chosen if act(r) == activation]
    if min_accuracy is not None:
        chosen = [r for r in chosen if float(metrics[r]["test_accuracy"]) >= min_accuracy]
    if not chosen:
        raise DataError(f"no rows left for split '{split}' in '{root}'")
    ds = ZooDataset(weights, layout, chosen, [act(r) for r in chosen],
                    [float(metrics[r]["test_accuracy"]) for r in chosen], **kw)
    ds.source = (f"zoo in '{root}', " + (f"row order from '{split_file}'" if split_file else
                                         "no *_split.csv: rows in file order"))
    logging.getLogger(__name__).info("cnn-zoo %s: %s", split, ds.source)
    return ds


def write_zoo(path, rows: np.ndarray, metrics: list, split: list | None = None,
              split_name="zoo_split.csv"):
    """Write a zoo folder in the published layout (rows: (n, 4970) float32, TF flat order)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "weights.npy", np.ascontiguousarray(rows, dtype=np.float32))
    write_layout(root / "layout.csv")
    write_metrics(root / "metrics.csv.gz", metrics)
    if split is not None:
        (root / split_name).write_text("\n".join(str(i) for i in split) + "\n")
