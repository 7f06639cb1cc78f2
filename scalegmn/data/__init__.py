"""Weight-space data sets: loaders for the public formats, local generators, transforms.

    >>> ds = scalegmn.data.load_dataset("data/", "dwsnets-mnist", split="train")
    >>> loader = ds.loader(batch_size=64, shuffle=True)     # yields PyG Batches
"""
__all__ = ["DWSNETS", "NFN", "SirenConvention", "coordinates", "render", "DataError",
           "GraphDataset", "load_dataset", "load_state_dict", "FORMATS"]

# imported on first use (torch loads with them), so that ``scalegmn data --help`` is instant
_LAZY = {**{k: ".conventions" for k in ("DWSNETS", "NFN", "SirenConvention", "coordinates",
                                        "render")},
         **{k: ".base" for k in ("DataError", "GraphDataset", "load_state_dict")},
         "load_dataset": ".formats", "FORMATS": ".formats"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
