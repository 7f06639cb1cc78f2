"""ScaleGMN options that reproduce the published model's choices where ours differ.

``ScaleGMNConfig`` keys (defaults: ours), applied by ``apply`` once a ScaleGMN is built:

- ``layer_scales: false``: the per-node-set input scales are not learned (ours learns one
  scalar per node set for biases, weights and backward values); they stay at their initial
  value: the data scales with ``data_scale: true``, 1 with ``data_scale: false``. The published
  model embeds the raw values with one linear map shared by all layers: both ``false``.
- ``init: torch_default``: PyTorch's initialisation of every ``Linear`` and ``LayerNorm``
  (the published model's; ours starts each ScaleEq gate near 1 and each bias-free map
  norm-preserving, so that states keep their magnitude through the layers).
- ``backward_edge_updates: scale_only`` (ScaleGMN-B): the backward edge states are updated in
  each layer only when the model reads ReLU-like (``scale``/``linear``) neurons; on sign-only
  networks (SIRENs, tanh) they stay their initial embedding, as in the published model (ours
  updates them for every group).

Equal in both styles: edge updates in every layer but the last of an invariant model, the node
positional embeddings (one per input neuron, one per hidden node set, one per output neuron;
multiplicative on hidden neurons, additive on I/O neurons). Not reproduced (see
docs/methods.md, differences from the published code): the published per-layer edge-type
embeddings, the width of the sign-invariant MLP inside the node update (ours: the update's
input width; published: the hidden width), and the I/O inputs of the ``last_layer`` readout.

``PUBLISHED_STYLE``: the bundle (train config ``mnist_inr_scalegmn_published_style``). Every
option keeps the model's symmetry (tests/test_published_style.py, float64).
"""
from __future__ import annotations

import torch.nn as nn

#: ScaleGMNConfig values of the published style
PUBLISHED_STYLE = {"layer_scales": False, "data_scale": False, "init": "torch_default",
                   "backward_edge_updates": "scale_only"}


def apply(model: nn.Module, cfg) -> nn.Module:
    """Apply ``cfg``'s published-style options to a freshly built ScaleGMN ``model`` (its
    ``embedding``, ``layers``, ``groups``); the defaults change nothing. Returns ``model``."""
    if cfg.backward_edge_updates == "scale_only" and not {"scale", "linear"} & set(model.groups):
        for layer in model.layers:
            if getattr(layer, "edge_bw", None) is not None:
                layer.edge_bw = None
    if not cfg.layer_scales:
        # frozen at their initial value (the data scales, or 1 without ``data_scale``); the two
        # options are independent: neither silently undoes the other
        emb = getattr(model, "embedding", model)      # the input embedding's module
        for p in (emb.x_scale, emb.e_scale, emb.eb_scale):
            p.requires_grad_(False)
    if cfg.init == "torch_default":
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm)):
                m.reset_parameters()
    return model
