"""Weight-space data sets: loaders for the public formats, local generators, transforms.

    >>> ds = scalegmn.data.load_dataset("data/", "dwsnets-mnist", split="train")
    >>> loader = ds.loader(batch_size=64, shuffle=True)     # yields PyG Batches
"""
__all__ = ["DWSNETS", "NFN", "SirenConvention", "coordinates", "render", "DataError",
           "GraphDataset", "load_dataset", "load_state_dict", "FORMATS"]

from ..lazy import lazy_exports

# imported on first use (torch loads with them), so that ``scalegmn data --help`` is instant
_LAZY = {**{k: ".conventions" for k in ("DWSNETS", "NFN", "SirenConvention", "coordinates",
                                        "render")},
         **{k: ".base" for k in ("DataError", "GraphDataset", "load_state_dict")},
         "load_dataset": ".formats", "FORMATS": ".formats"}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
