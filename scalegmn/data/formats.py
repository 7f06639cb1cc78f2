"""``load_dataset``: read a data set by its format's name.

The loaders register themselves in the one table ``base.FORMATS`` (``datasets``: ``dwsnets-mnist``,
``dwsnets-fmnist``, ``nfn-siren``, ``folder``; ``zoo``: ``cnn-zoo``); this module imports them so
that the table is full, and looks the format up there.
"""
from __future__ import annotations

import os

from . import datasets, zoo  # noqa: F401 - importing them registers their formats
from .base import FORMATS, DataError, GraphDataset, format_loader

__all__ = ["FORMATS", "load_dataset"]


def load_dataset(path, format: str, split: str = "train", **options) -> GraphDataset:
    """Read a data set as published. Formats: ``dwsnets-mnist``, ``dwsnets-fmnist``,
    ``nfn-siren``, ``cnn-zoo``, ``folder`` (see each loader for its options; ``FORMATS`` holds
    every registered one). An unknown format is a ``ValueError`` listing the formats; a missing
    ``path`` a ``DataError`` naming it."""
    loader = format_loader(format)
    if not os.path.exists(path):
        raise DataError(f"missing folder: '{path}'")
    return loader(path, split=split, **options)
