"""The ScaleGMN family (ScaleGMN, ScaleGMN-B, GMN): equations in ``layers.py``, the input
embedding in ``embedding.py``, readouts in ``readout.py``, the assembled model in ``model.py``;
the ``Engine`` interface (``engine.py``) with its sparse and dense implementations, chosen and
cached by ``plan.py``."""
from .embedding import InputEmbedding, reciprocal_bound
from .engine import Engine, Mapped
from .layers import EdgeUpdate, ScaleGMNLayer
from .model import ScaleGMN
from .plan import engine_for, io_nodes, node_groups
from .readout import EditHead, Readout

__all__ = ["EdgeUpdate", "EditHead", "Engine", "InputEmbedding", "Mapped", "Readout", "ScaleGMN",
           "ScaleGMNLayer", "engine_for", "io_nodes", "node_groups", "reciprocal_bound"]
