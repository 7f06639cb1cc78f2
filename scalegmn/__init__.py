"""Metanetworks on parameter graphs (ScaleGMN and friends), tasks, training and the CLI.

    >>> import converters, scalegmn
    >>> g = converters.to_graph(converters.models.Siren((2, 32, 32, 1)))
    >>> net = scalegmn.build("scalegmn", "invariant", spec=g, out_dim=10, hidden=64, layers=2)
    >>> net(converters.batch_graphs([g, g])).shape
    torch.Size([2, 10])
"""
from . import allocator
from .config import ModelConfig
from .registry import backends, build, count_parameters, register

__version__ = "0.1.0"
__all__ = ["ModelConfig", "backends", "build", "count_parameters", "register"]
