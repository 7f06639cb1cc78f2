"""Loaders for the public INR data sets (``dwsnets-mnist``, ``dwsnets-fmnist``, ``nfn-siren``)
and a user's own checkpoints (``folder``), read exactly as published.

Every data set is a ``torch.utils.data.Dataset`` of ``ParameterGraph``s with a target ``y``; items
are built lazily from the files (state dicts are loaded with ``weights_only=True``). Each loader
registers itself in ``base.FORMATS``; read a data set with ``scalegmn.data.load_dataset``.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Callable, Optional

import converters

from .base import (DataError, FileDataset, GraphDataset, InrItem, Item, load_state_dict,
                   register_format)
from .conventions import DWSNETS, NFN, SirenConvention

__all__ = ["DataError", "GraphDataset", "load_state_dict", "dwsnets_mnist", "dwsnets_fmnist",
           "nfn_siren", "folder", "dwsnets_mnist_folders"]


log = logging.getLogger(__name__)


def _siren_arch(convention: SirenConvention, sd_paths, last_key):
    """The SIREN spec, read from the first readable file of ``sd_paths``."""
    sd_paths = list(sd_paths) if isinstance(sd_paths, (list, tuple)) else [sd_paths]
    first_error = None
    for sd_path in sd_paths:
        try:
            return _siren_arch_one(convention, sd_path, last_key)
        except DataError as e:
            first_error = first_error or e
    raise first_error


def _siren_arch_one(convention, sd_path, last_key):
    sd = load_state_dict(sd_path)
    if last_key not in sd:
        raise DataError(f"'{sd_path}' has no '{last_key}' (keys {list(sd)[:6]}): not a "
                        f"{convention.style} SIREN")
    keys = [k for k in sd if k.endswith("weight")]
    widths = [sd[keys[0]].shape[1]] + [sd[k].shape[0] for k in keys]
    return convention.arch(widths)


def _require(path: Path, what: str):
    if not path.exists():
        raise DataError(f"missing {what}: '{path}'")
    return path


def _read_split(path: Path, split: str, what: str):
    """One split's entry of a splits json (a list of paths, or ``{"path", "label"}``)."""
    splits = json.loads(_require(path, what).read_text())
    if split not in splits:
        raise DataError(f"'{path}' has no split '{split}' (has {sorted(splits)})")
    entry = splits[split]
    if not (entry["path"] if isinstance(entry, dict) else entry):
        raise DataError(f"split '{split}' of '{path}' is empty")
    return entry


def _resolve(root: Path, p: str, anchor: str, inner: Optional[Path] = None) -> Path:
    """A path from a splits file: as written if it is absolute and exists, else re-rooted at
    ``anchor`` (the folder ``inner``, by default ``root / anchor``), else relative to ``root``."""
    q = Path(p)
    if q.is_absolute() and q.exists():
        return q
    parts = q.parts
    if anchor in parts:
        return (inner if inner is not None else root / anchor).joinpath(
            *parts[parts.index(anchor) + 1:])
    return root / q


def _data_folders(path, inner: str, looks_inner: Callable[[Path], bool]):
    """``(outer, inner)`` for a layout whose networks sit in a folder named ``inner``: ``path``
    may be the folder that holds it or that folder itself (recognised by its name or by
    ``looks_inner``)."""
    root = Path(path)
    if (root / inner).is_dir():
        return root, root / inner
    if root.is_dir() and (root.name == inner or looks_inner(root)):
        return root.parent, root
    if not root.is_dir():
        raise DataError(f"missing folder: '{root}' (pass the folder that holds {inner}/, or "
                        f"{inner}/ itself)")
    raise DataError(f"'{root}' holds no {inner}/ folder and is not one (pass the folder that "
                    f"holds {inner}/, or {inner}/ itself)")


def dwsnets_mnist_folders(path):
    """``(outer, inner)``: the folder holding ``mnist-inrs/`` and ``mnist-inrs/`` itself, from
    either of them."""
    return _data_folders(path, "mnist-inrs",
                         lambda d: any(d.glob("mnist_png_*/checkpoints/model_final.pth")))


def _find_splits(outer: Path, inner: Path, split_file, hint: str) -> Path:
    """The splits file: beside the data folder (DWSNets, ``scalegmn data``) or inside it (the
    published ScaleGMN layout), in that order."""
    candidates = [outer / split_file, inner / split_file]
    for c in candidates:
        if c.is_file():
            return c
    raise DataError(f"missing splits file: looked for "
                    f"{' and '.join(repr(str(c)) for c in dict.fromkeys(candidates))} ({hint})")


# -- DWSNets INRs ---------------------------------------------------------------------------------
_MNIST_PNG = re.compile(r"mnist_png_.*_(\d+)")


def _mnist_png_image(path: Path) -> Optional[int]:
    """The image index of a DWSNets MNIST INR: its folder ``mnist_png_{kind}_{label}_{index}``
    (``.../checkpoints/model_final.pth``) ends in it; ``None`` for another layout."""
    m = _MNIST_PNG.fullmatch(path.parent.parent.name)
    return int(m.group(1)) if m else None


@register_format("dwsnets-mnist")
def dwsnets_mnist(path, split="train", split_file="mnist_splits.json", **kw) -> GraphDataset:
    """``path`` is the folder holding ``mnist-inrs/``, or ``mnist-inrs/`` itself;
    ``mnist_splits.json`` (``{split: {"path": [...], "label": [...]}}``) is looked for beside
    ``mnist-inrs/`` (DWSNets, ``scalegmn data``), then inside it (the published ScaleGMN
    layout). Labels are digits 0-9; ``.source`` names the folder and splits file used. Items are
    ``InrItem``s whose ``image`` is read from the ``mnist_png_*_{index}`` folder names."""
    outer, inner = dwsnets_mnist_folders(path)
    splits = _find_splits(outer, inner, split_file,
                          f"write one with `scalegmn data splits --path {outer}`")
    entry = _read_split(splits, split, "splits file")
    paths = [_resolve(outer, p, "mnist-inrs", inner) for p in entry["path"]]
    labels = [int(lb) for lb in entry["label"]]
    arch = _siren_arch(DWSNETS, paths, "seq.0.weight")
    items = [InrItem(p, lb, _mnist_png_image(p)) for p, lb in zip(paths, labels)]
    ds = FileDataset(items, arch, DWSNETS, name="dwsnets-mnist", **kw)
    ds.source = f"INRs in '{inner}', splits from '{splits}'"
    log.info("dwsnets-mnist %s: %s", split, ds.source)
    return ds


@register_format("dwsnets-fmnist")
def dwsnets_fmnist(path, split="train", split_file="fmnist_inrs/splits.json", **kw):
    """``path`` holds ``fmnist_inrs/{train,test}/model_{idx}.pth`` (each with a ``label`` entry)
    and ``fmnist_inrs/splits.json`` (``{split: [paths]}``); ``fmnist_inrs/`` itself is accepted
    too."""
    root, inner = _data_folders(path, "fmnist_inrs",
                                lambda d: (d / "splits.json").is_file() and (d / "train").is_dir())
    candidates = [root / split_file, inner / Path(split_file).name]
    splits = next((c for c in candidates if c.is_file()), candidates[0])
    paths = [_resolve(root, p, "fmnist_inrs", inner)
             for p in _read_split(splits, split, "splits file")]
    arch = _siren_arch(DWSNETS, paths, "seq.0.weight")
    # labels live inside the files and are read with each item
    ds = FileDataset([InrItem(p, None) for p in paths], arch, DWSNETS, name="dwsnets-fmnist",
                     **kw)
    ds.source = f"INRs in '{inner}', splits from '{splits}'"
    log.info("dwsnets-fmnist %s: %s", split, ds.source)
    return ds


# -- NFN SIRENs -------------------------------------------------------------------------------------
_NFN_BASE = re.compile(r"^randinit_smaller_(\d)s$")
_NFN_AUG = re.compile(r"^randinit_smaller_aug(\d+)_(\d)s$")
_NFN_IDX = re.compile(r"^net(\d+)\.pth$")


@register_format("nfn-siren")
def nfn_siren(path, split="train", split_points=(45000, 50000), extra_aug=0, **kw):
    """``path`` is a ``siren_{mnist,fashion,cifar}_wts`` folder: ``randinit_smaller_{label}s/
    net{idx}.pth`` (and ``randinit_smaller_aug{k}_{label}s/`` re-fits). Split by ``idx``:
    train < split_points[0] <= val < split_points[1] <= test; ``extra_aug`` adds the first k
    augmented copies to train only (the base folders are matched strictly, as ScaleGMN does).
    Items are ``InrItem``s whose ``image`` is ``idx``."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"missing folder: '{root}'")
    lo, hi = split_points
    keep = {"train": lambda i: i < lo, "val": lambda i: lo <= i < hi,
            "test": lambda i: i >= hi}
    if split not in keep:
        raise DataError(f"split must be train, val or test, got {split!r}")
    items = []
    for sub in sorted(root.iterdir()):
        m, a = _NFN_BASE.match(sub.name), _NFN_AUG.match(sub.name)
        if m:
            label = int(m.group(1))
        elif a and split == "train" and int(a.group(1)) < extra_aug:
            label = int(a.group(2))
        else:
            continue
        for f in sorted(sub.iterdir()):
            mi = _NFN_IDX.match(f.name)
            if mi and keep[split](int(mi.group(1))):
                items.append(InrItem(f, label, int(mi.group(1))))
    if not items:
        raise DataError(f"no SIRENs for split '{split}' under '{root}' (expected "
                        f"randinit_smaller_<label>s/net<idx>.pth)")
    items.sort(key=lambda t: (t[2], str(t[0])))
    sd = load_state_dict(items[0][0])
    last = max(int(k.split(".")[1]) for k in sd if k.startswith("net."))
    arch = _siren_arch(NFN, [it[0] for it in items], f"net.{last}.weight")
    return FileDataset(items, arch, NFN, name="nfn-siren", **kw)


# -- a user's own checkpoints ----------------------------------------------------------------
@register_format("folder")
def folder(path, split=None, labels_file="labels.csv", arch_file="arch.json", **kw):
    """``path`` holds state-dict files, ``arch.json`` (an ``ArchSpec``, e.g. from
    ``scalegmn convert --arch-out``) and ``labels.csv`` with rows ``file,label[,split]``
    (without a split column every file belongs to every split)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"missing folder: '{root}'")
    arch = converters.ArchSpec.from_json(_require(root / arch_file, "arch file").read_text())
    rows = [ln.split(",") for ln in _require(root / labels_file, "labels file").read_text()
            .splitlines() if ln.strip() and not ln.startswith("file,")]
    items = []
    has_split = any(len(r) >= 3 and r[2].strip() for r in rows)
    for r in rows:
        if split is not None and has_split and (len(r) < 3 or r[2].strip() != split):
            continue
        label = r[1].strip()
        label = int(label) if re.fullmatch(r"-?\d+", label) else float(label)
        items.append(Item(root / r[0].strip(), label))
    if not items:
        raise DataError(f"'{root / labels_file}' lists no files" +
                        (f" for split '{split}'" if split else ""))
    return FileDataset(items, arch, None, name="folder", **kw)
