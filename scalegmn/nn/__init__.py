"""Building blocks of scale/sign-equivariant metanetworks (see each class for shapes/symmetry)."""
from .blocks import MLP, GroupDispatch, ScaleEq, ScaleInv, safe_normalize

__all__ = ["MLP", "GroupDispatch", "ScaleEq", "ScaleInv", "safe_normalize"]
