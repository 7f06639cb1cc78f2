"""Building blocks of scale/sign-equivariant metanetworks (see each class for shapes/symmetry)."""
from .blocks import (MLP, GroupDispatch, ScaleEq, ScaleInv, gate_near_one, norm_preserving,
                     safe_normalize)

__all__ = ["MLP", "GroupDispatch", "ScaleEq", "ScaleInv", "gate_near_one", "norm_preserving",
           "safe_normalize"]
