"""Parameter-sharing metanetworks (Monomial-NFN, MAGEP-NFN, NP, HNP, STATNN) on a weight-space
container; see ``weightspace`` for the data model, ``layers`` for the equations."""
from .layers import (EntryNormPool, FourierFeatures, MonomialLinear, NeuronSetLinear,
                     PolyInvariant, PolyLinear, mean_pool, path_products, weight_statistics)
from .models import MagepNFN, MonomialNFN, NeuronSetNFN, StatNN
from .weightspace import Chain, WeightSpace, read, write

__all__ = ["Chain", "EntryNormPool", "FourierFeatures", "MagepNFN", "MonomialLinear",
           "MonomialNFN", "NeuronSetLinear", "NeuronSetNFN", "PolyInvariant", "PolyLinear", "StatNN",
           "WeightSpace", "mean_pool", "path_products", "read", "weight_statistics", "write"]
