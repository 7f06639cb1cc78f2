"""The network's input and output: the program's first and last ops."""
from __future__ import annotations

from .base import OpRule


class Input(OpRule):
    """``input``: the network input, node set 0 (one node per input feature or channel);
    ``channels`` and ``rank`` (dimensions after the batch); ``chan_dim``, present only when it is
    not 1: the axis of the channels (the last one for token-wise data ``(batch, *tokens,
    features)``). Its nodes are ``fixed``."""

    kind = "input"
    creates_nodes = True
    doc = "the network input; creates node set 0 (``channels`` nodes, ``rank`` dims)"

    def trace_placeholder(self, t, node) -> None:
        shape = t.shape(node)
        meta = node.meta.get("tensor_meta")
        if meta is not None and not (meta.dtype.is_floating_point or meta.dtype.is_complex):
            return t.rules["embedding"].trace_ids(t, node)   # integer token ids
        if len(shape) < 2:
            t.fail(node, "input", f"input must be (batch, channels, ...), got shape {shape}")
        cd = getattr(t, "chan_dim", 1)
        t.sizes[0], t.names[0] = shape[cd], "input"
        vid = t.new_vid()
        op = {"op": "input", "out": vid, "ns": 0, "channels": shape[cd], "rank": len(shape) - 1}
        if cd != 1:
            op["chan_dim"] = cd
        t.ops.append(op)
        t.vals[node] = t.value(vid, [0], shape[cd], len(shape), None, (cd,))
        t.input_shape = list(shape[1:])


class Output(OpRule):
    """``output``: the returned value; its node sets are ``fixed`` (no factor, no permutation)."""

    kind = "output"
    doc = "the returned value (its node sets are ``fixed``)"

    def trace_output(self, t, node) -> None:
        import torch.fx as fx
        arg = node.args[0]
        if not isinstance(arg, fx.Node):
            t.fail(node, "output", "the model must return a single tensor")
        val = t.tensor_arg(node, arg)
        if val.flat is not None:
            t.fail(node, "output", "a flattened feature map cannot be the output")
        t.ops.append({"op": "output", "in": [val.vid]})
        t.out_val = val
