"""Constructive check of the ScaleGMN simulation theorem (Kalogeropoulos et al., "Scale Equivariant
Graph Metanetworks", NeurIPS 2024, Thm 5.2; docs/simulation.md).

``check(module, inputs)`` sets the parameters of a ScaleGMN-B (our ``ScaleGMN`` class, our
engines, embeddings, messages and updates) so that, fed the network's graph, its node states hold
every neuron's pre-activation ``z`` and activation ``x`` for each input, and (over ``2L``
iterations) the inverse gradients ``pinv(dL/dz)``, ``pinv(dL/dx)``; its backward-edge states hold
``pinv(W)`` and the weight gradients ``dL/dW``. It then compares them with the network's own forward
pass and autograd. ``pinv(t) = 1/t`` for ``t != 0`` and ``0`` at 0 (the scalar pseudo-inverse):
gradients transform by ``1/q``, so their pseudo-inverses have the node's symmetry, and zero weights,
zero gradients and dead ReLUs stay finite.

Node state channels (``n`` inputs, ``P`` spatial positions; ``P = 1`` for MLPs):
``[b | Z (n P) | X (n P) | GX (n P) | GZ (n P) | IX (n P) | IG (n P)]``; ``IX`` and ``IG`` hold
the network input (input neurons) and ``pinv(dL/dy / P)`` (output neurons), injected through the
additive I/O positional embeddings, as in the theorem. Which maps are the ordinary trainable blocks
and which are closed-form oracles is listed in ``SimulationReport.exact_parts`` /
``oracle_parts`` and in ``docs/simulation.md``.
"""
from .construct import Simulator, construct
from .parts import Channels, SimUpdate, pinv
from .report import SimulationReport, check, evaluate

__all__ = ["Channels", "SimUpdate", "SimulationReport", "Simulator", "check", "construct",
           "evaluate", "pinv"]
