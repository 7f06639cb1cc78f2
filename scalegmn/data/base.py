"""What every data set shares: the error type, the item records, the ``GraphDataset`` base class,
and the one table of formats (``FORMATS``) that ``load_dataset`` looks a format up in.

The loader modules (``datasets``: the INR formats and ``folder``; ``zoo``: ``cnn-zoo``) import this
module and register their loaders here with ``register_format``; ``formats.load_dataset`` imports
them, so no loader module imports another.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Union

import torch

import converters


class DataError(ValueError):
    """A data set file that cannot be used; the message names the file."""


def load_state_dict(path) -> dict:
    """``torch.load(path, weights_only=True)`` with a clear error naming the file."""
    try:
        sd = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:
        raise DataError(f"cannot read '{path}': {type(e).__name__}: {e}") from e
    if not isinstance(sd, dict):
        raise DataError(f"'{path}' holds a {type(sd).__name__}, not a state dict")
    return sd


class Item(NamedTuple):
    """One network of a file-based data set: the file its state dict is read from and its target
    (``None`` when the target is stored inside the file, as in DWSNets Fashion-MNIST)."""
    source: Path
    label: Union[int, float, None]


class InrItem(NamedTuple):
    """One INR: its file, its target and ``image``, the index of the image it was fitted to in
    the ``images.npz`` saved with the data set (``None`` where the layout does not tell it).
    Set by the loader that knows the layout; INR editing reads it (``GraphDataset.image``)."""
    source: Path
    label: Union[int, float, None]
    image: Optional[int] = None


class GraphDataset(torch.utils.data.Dataset):
    """Base class: ``items`` is a list of tuples whose first two entries are ``(source, label)``
    (``Item``, ``InrItem`` or a format's own record); ``_state_dict(source)`` reads one.

    ``on_bad="raise"`` (default) raises ``DataError`` naming the file when an item is read;
    ``"skip"`` checks every item at construction, drops unreadable ones with one warning giving
    their count, and keeps the rest. ``transform`` is applied to each graph (e.g. augmentation).
    ``source`` says which folder and index file were read (set by the loaders).
    """

    source: str = ""

    def __init__(self, items, arch_for, convention=None, transform: Optional[Callable] = None,
                 on_bad: str = "raise", name: str = "dataset"):
        if on_bad not in ("raise", "skip"):
            raise ValueError("on_bad must be 'raise' or 'skip'")
        self.items, self.arch_for, self.convention = list(items), arch_for, convention
        self.transform, self.name = transform, name
        self.skipped = []
        if on_bad == "skip":
            good = []
            for it in self.items:
                try:
                    self._graph(it)
                    good.append(it)
                except DataError as e:
                    self.skipped.append(str(e))
            if self.skipped:
                warnings.warn(f"{name}: skipped {len(self.skipped)} unreadable item(s), e.g. "
                              f"{self.skipped[0]}")
            self.items = good

    def __len__(self):
        return len(self.items)

    def _state_dict(self, source):  # pragma: no cover - overridden
        raise NotImplementedError

    def _graph(self, item):
        source, label = item[0], item[1]
        sd = self._state_dict(source)
        if label is None:   # stored inside the file (DWSNets FMNIST)
            if "label" not in sd:
                raise DataError(f"'{source}' has no 'label' entry")
            label = int(sd.pop("label"))
        arch = self.arch_for(item)
        try:
            g = converters.from_state_dict(sd, arch)
        except (KeyError, ValueError) as e:
            raise DataError(f"'{source}': {e}") from e
        g.y = torch.tensor([label], dtype=torch.float32 if isinstance(label, float)
                           else torch.long)
        if self.convention is not None:
            g.convention = self.convention.style   # the full convention is in arch.meta
        return g

    def __getitem__(self, i):
        g = self._graph(self.items[i])
        return self.transform(g) if self.transform is not None else g

    @property
    def labels(self) -> list:
        """Targets of all items (reads the files when labels are stored inside them)."""
        return [it[1] if it[1] is not None else int(self._state_dict(it[0])["label"])
                for it in self.items]

    def image(self, i: int) -> int:
        """The index of the image item ``i`` was fitted to (INR data sets whose layout tells it,
        ``InrItem.image``); ``ValueError`` naming the item otherwise."""
        image = getattr(self.items[i], "image", None)
        if image is None:
            raise ValueError(f"cannot tell which image '{self.items[i][0]}' was fitted to "
                             f"({self.name} items do not record it)")
        return int(image)

    def images_file(self, root) -> Path:
        """The ``images.npz`` the generators saved with this data set: the nearest one above
        its first network file, up to the data folder ``root`` (another data set's images
        beside it in ``root`` are never taken); ``ValueError`` when there is none."""
        if not self.items or not isinstance(self.items[0][0], (str, Path)):
            raise ValueError(f"{self.name}: INR editing needs a data set of network files")
        network_file = self.items[0][0]
        folder = Path(network_file).parent
        top = Path(root).resolve()
        while True:
            if (folder / "images.npz").is_file():
                return folder / "images.npz"
            if folder.resolve() == top or folder.parent == folder:
                break
            folder = folder.parent
        raise ValueError(f"INR editing needs the source images: no images.npz between "
                         f"'{network_file}' and '{root}' (scalegmn data mnist-inrs/fmnist-inrs/"
                         f"nfn-siren write one with the networks)")

    def loader(self, batch_size=64, shuffle=False, **kwargs):
        """A DataLoader yielding ``Batch``es (``converters.batch_graphs`` collation)."""
        return converters.GraphLoader(self, batch_size=batch_size, shuffle=shuffle, **kwargs)


class FileDataset(GraphDataset):
    """Items whose sources are state-dict files, all of one architecture ``arch``."""

    def __init__(self, items, arch, convention=None, **kw):
        self._arch = arch
        super().__init__(items, lambda it: self._arch, convention, **kw)

    def _state_dict(self, source):
        return load_state_dict(source)


# -- the format table ----------------------------------------------------------------------------
#: format name -> loader ``(path, split=..., **options) -> GraphDataset``; filled by the loader
#: modules through ``register_format``
FORMATS: dict = {}


def register_format(name: str) -> Callable:
    """Decorator: enter a loader into ``FORMATS`` under ``name`` (a second loader for a name that
    is taken is refused, naming both)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise ValueError(f"format name {name!r}: lower-case letters, digits and '-' only")

    def enter(loader: Callable) -> Callable:
        old = FORMATS.get(name)
        if old is not None and ((old.__module__, old.__qualname__)
                                != (loader.__module__, loader.__qualname__)):
            raise ValueError(f"format {name!r} is registered already "
                             f"({old.__module__}.{old.__qualname__})")
        FORMATS[name] = loader
        return loader
    return enter


def format_loader(name: str) -> Callable:
    """The loader registered for ``name``; ``ValueError`` listing the formats otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; choose from {sorted(FORMATS)}") from None
