"""torch.nn models <-> parameter graphs, with their symmetry groups and group actions.

    >>> import torch.nn as nn, converters
    >>> g = converters.to_graph(nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1)))
    >>> g.num_nodes, g.edge_index.shape[1]
    (11, 24)
"""
from .actions import Action, sample_action
from .archspec import ArchSpec
from .convert import to_graph
from .dense import DenseWeights, from_dense, functional_forward, to_dense
from .errors import UnsupportedLayerError
from .graph import (GraphLoader, ParameterGraph, archs_of, batch_graphs, batch_vector,
                    from_state_dict, single_arch, to_state_dict)
from . import arch, load, models
from .groups import ACTIVATIONS, EDGE_TYPES, GROUPS, NODE_FEATURES, ROLES
from .io import from_networkx, load_graph, save_graph, to_networkx
from .module import SpecModule, to_module

__all__ = [
    "Action", "ArchSpec", "DenseWeights", "GraphLoader", "ParameterGraph", "SpecModule",
    "UnsupportedLayerError", "archs_of", "batch_graphs", "batch_vector", "single_arch", "from_dense", "from_state_dict", "functional_forward",
    "sample_action", "to_dense", "save_graph", "load_graph", "to_networkx", "from_networkx", "to_graph", "to_module", "to_state_dict",
    "ACTIVATIONS", "EDGE_TYPES", "GROUPS", "NODE_FEATURES", "ROLES",
]
