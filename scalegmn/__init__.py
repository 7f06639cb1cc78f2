"""Metanetworks on parameter graphs (ScaleGMN and friends), tasks, training and the CLI.

    >>> import converters, scalegmn
    >>> g = converters.to_graph(converters.models.Siren((2, 32, 32, 1)))
    >>> net = scalegmn.build("scalegmn", "invariant", spec=g, out_dim=10, hidden=64, layers=2)
    >>> net(converters.batch_graphs([g, g])).shape
    torch.Size([2, 10])
"""
from . import allocator
from .lazy import lazy_exports

__version__ = "0.1.0"
__all__ = ["ModelConfig", "ScaleGMNConfig", "WeightSpaceConfig", "ExecutionConfig", "backends",
           "build", "count_parameters", "register"]

# imported on first use, so that ``scalegmn --help`` and argument errors never load torch
_LAZY = {"ModelConfig": ".config", "ScaleGMNConfig": ".config", "WeightSpaceConfig": ".config",
         "ExecutionConfig": ".config", "backends": ".registry", "build": ".registry",
         "count_parameters": ".registry", "register": ".registry"}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
