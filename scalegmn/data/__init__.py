"""Weight-space data sets: loaders for the public formats, local generators, transforms.

    >>> ds = scalegmn.data.load_dataset("data/", "dwsnets-mnist", split="train")
    >>> loader = ds.loader(batch_size=64, shuffle=True)     # yields PyG Batches
"""
from .conventions import DWSNETS, NFN, SirenConvention, coordinates, render
from .datasets import DataError, GraphDataset, load_dataset, load_state_dict

__all__ = ["DWSNETS", "NFN", "SirenConvention", "coordinates", "render", "DataError",
           "GraphDataset", "load_dataset", "load_state_dict"]
