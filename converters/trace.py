"""Trace any ``torch.nn`` model with ``torch.fx`` into an ``ArchSpec``.

The tracer treats ``torch.nn`` layers as leaves and traces through user modules. Every traced
module, function and method is handed to the op rule that reads it (``converters.ops``: each rule
lists its fx forms); anything else raises ``UnsupportedLayerError`` naming the fx node or module
path, because a silently wrong graph is worse than none (docs/design.md 2.3). The ``_Builder``
below is the rules' view of the trace: values, node sets, and the helpers that emit ops.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .archspec import ArchSpec
from .errors import UnsupportedLayerError
from . import ops
from .groups import NODE_FEATURES
from .ops.alias import ALIAS_FNS, dropout_args
from .ops.transformer import active_dropout
from .symmetry import analyse

_REFUSALS = [
    ((nn.RNNBase, nn.RNNCellBase), "recurrent layers are not supported"),
    ((nn.Transformer,), "this transformer model is not supported (its parts are: "
                        "nn.TransformerEncoder(Layer), nn.TransformerDecoder(Layer))"),
    ((nn.EmbeddingBag,), "nn.EmbeddingBag is not supported (nn.Embedding is)"),
    ((nn.modules.conv._ConvTransposeNd,), "transposed convolutions are not supported"),
    ((nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm),
     "this normalisation is not supported (BatchNorm, LayerNorm, GroupNorm, InstanceNorm and "
     "RMSNorm are)"),
]


@dataclass
class _Val:
    """A traced tensor. Its channels (the neurons of ``parts``) lie along the tensor axes
    ``caxes`` (most significant first): one axis, 1 for ``(batch, features)`` and conv maps
    ``(batch, C, *spatial)``, the last one for token-wise data ``(batch, *tokens, features)``;
    several after a reshape that splits the channel axis (``(batch, T, F) -> (batch, T, H, D)``:
    ``caxes`` (2, 3), ``csplit`` (H, D): neuron ``h * D + d`` sits at ``[..., h, d]``, so head
    ``h`` holds the neurons ``h * D`` to ``h * D + D - 1``). Every other axis but the batch is a
    token (or spatial) axis, over which the channel's weights are shared."""
    vid: int
    parts: list           # node-set ids along the channel dimension
    chan: int             # number of channels
    rank: int
    flat: Optional[list]  # spatial shape folded into the feature dim by a flatten, else None
    caxes: tuple = (1,)   # tensor axes holding the channels, most significant first
    csplit: Optional[tuple] = None  # sizes of those axes when several (None: one axis)

    @property
    def cdim(self) -> Optional[int]:
        """The channel axis, or None when the channels are split over several axes."""
        return self.caxes[0] if len(self.caxes) == 1 else None


class _NoAutogradFunction(RuntimeError):
    pass


def _refuse_autograd_function(cls, *args, **kwargs):
    raise _NoAutogradFunction(f"custom autograd.Function {cls.__qualname__}")


def _refusal(m: nn.Module) -> Optional[str]:
    """Why the ``torch.nn`` layer ``m`` cannot be converted, or None when it is supported."""
    if ops.module_rule(type(m)) is not None:
        return None
    for types, why in _REFUSALS:
        if isinstance(m, types):
            return why
    return "not supported"


def _is_torch_leaf(m: nn.Module) -> bool:
    """torch.fx's default: a ``torch.nn`` layer (not a ``Sequential``) is a leaf of the trace."""
    return fx.Tracer().is_leaf_module(m, "")


class _PathTracer(fx.Tracer):
    """``fx.Tracer`` that remembers the innermost module whose ``forward`` raised."""

    def __init__(self):
        super().__init__()
        self.failed_at = None

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_at is None:
                try:
                    self.failed_at = (self.path_of_module(m), m)
                except Exception:   # a module that is not a registered submodule
                    self.failed_at = ("<unregistered>", m)
            raise


def _trace(module: nn.Module) -> fx.GraphModule:
    if _is_torch_leaf(module):   # torch.fx would trace the layer's own code (or fail inside it)
        raise UnsupportedLayerError(
            type(module).__name__, type(module).__name__,
            _refusal(module) or "a bare layer is not a model: wrap it, e.g. nn.Sequential(layer)")
    tracer = _PathTracer()
    # the raw classmethod object (``Function.apply`` would give a method bound to Function)
    original = torch.autograd.Function.__dict__["apply"]
    torch.autograd.Function.apply = classmethod(_refuse_autograd_function)
    try:
        graph = tracer.trace(module)
    except UnsupportedLayerError:
        raise
    except Exception as e:
        path, m = tracer.failed_at if tracer.failed_at and tracer.failed_at[0] else ("", module)
        name, what = path or type(module).__name__, type(m).__qualname__
        if isinstance(e, _NoAutogradFunction):
            raise UnsupportedLayerError(name, str(e),
                                        "its backward would be lost by tracing") from e
        if isinstance(e, fx.proxy.TraceError):
            why = f"forward cannot be traced by torch.fx (data-dependent control flow?): {e}"
        elif isinstance(e, TypeError) and "item assignment" in str(e):
            why = f"forward cannot be traced by torch.fx: in-place slice assignment is " \
                  f"unsupported: {e}"
        else:
            why = f"forward cannot be traced by torch.fx: {type(e).__name__}: {e}"
        raise UnsupportedLayerError(name, what, why) from e
    finally:
        torch.autograd.Function.apply = original
    gm = fx.GraphModule(module, graph)
    for node in gm.graph.nodes:   # before anything runs them on a guessed input
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if _refusal(m) is not None:
                raise UnsupportedLayerError(str(node.target), type(m).__name__, _refusal(m))
    return gm


class _NodeFailed(RuntimeError):
    def __init__(self, node: fx.Node, error: Exception):
        super().__init__(str(error))
        self.node, self.error = node, error


@dataclass
class _TensorMeta:
    shape: tuple
    dtype: torch.dtype


class _ShapeRecorder(fx.Interpreter):
    """Runs a traced model, recording each tensor's shape in ``node.meta["tensor_meta"]`` (like
    ``torch.fx``'s ShapeProp, but silent: a failure raises ``_NodeFailed`` naming the node)."""

    def run_node(self, n):
        try:
            result = super().run_node(n)
        except Exception as e:
            raise _NodeFailed(n, e) from e
        if isinstance(result, torch.Tensor):
            n.meta["tensor_meta"] = _TensorMeta(tuple(result.shape), result.dtype)
        else:
            n.meta.pop("tensor_meta", None)
        return result


def _node_site(gm: fx.GraphModule, node: fx.Node) -> tuple:
    """(where, what) of a traced node for an error: a module call's path and type, else the path
    of the module whose ``forward`` made it and the fx name."""
    if node.op == "call_module":
        return str(node.target), type(gm.get_submodule(node.target)).__name__
    stack = node.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values())) if stack else None
    if owner is None:
        return node.name, str(node.op)
    return f"{owner[0]}:{node.name}", f"{node.op} in {getattr(owner[1], '__name__', owner[1])}"


def _signature(gm: fx.GraphModule):
    return [(n.op, str(n.target)) for n in gm.graph.nodes]


def _guess_input(gm: fx.GraphModule, module: nn.Module, dtype) -> torch.Tensor:
    """An example input for ``module``, from the first traced layer whose rule can tell one
    (``OpRule.example_input``)."""
    for node in gm.graph.nodes:
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            rule = ops.module_rule(type(m))
            done, x = rule.example_input(m, module, dtype) if rule else (False, None)
            if x is not None:
                return x
            if done:
                break
    raise UnsupportedLayerError(type(module).__name__, "input shape",
                                "cannot infer the input shape: pass example_input=")


def _module_dtype(module: nn.Module):
    dtypes = {t.dtype for t in list(module.parameters()) + list(module.buffers())
              if t.is_floating_point()}
    if len(dtypes) > 1:
        raise UnsupportedLayerError(type(module).__name__, "dtypes",
                                    f"parameters mix dtypes {sorted(map(str, dtypes))}")
    return dtypes.pop() if dtypes else torch.get_default_dtype()


def trace_arch(module: nn.Module, example_input: Optional[torch.Tensor] = None) -> ArchSpec:
    """The ``ArchSpec`` of ``module`` (traced in eval mode; every submodule is left in its own
    mode). A module whose current mode computes another function than eval mode (a BatchNorm or
    a dropout with p > 0 in training mode) is refused: call ``.eval()`` first."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(module).__name__}")
    modes = {name: m.training for name, m in module.named_modules()}
    try:
        module.train()
        gm_train = _trace(module)
        sig_train = _signature(gm_train)
        module.eval()
        gm = _trace(module)
        for node in gm.graph.nodes:
            if node.op == "get_attr" and str(node.target).startswith("_tensor_constant"):
                raise UnsupportedLayerError(str(node.target), "constant tensor created in forward",
                                            "it would be frozen at trace time")
        if _signature(gm) != sig_train:
            raise UnsupportedLayerError(type(module).__name__, "self.training",
                                        "forward differs between train and eval mode")
        _refuse_training_mode(gm_train, module, modes)
        dtype = _module_dtype(module)
        if example_input is None:
            example_input = _guess_input(gm, module, dtype)
        needed = [n for n in gm.graph.nodes if n.op == "placeholder" and not n.args]
        if len(_inputs(example_input)) < len(needed):   # a mask input, say, not passed
            raise UnsupportedLayerError(
                type(module).__name__, "forward",
                f"the model takes {len(needed)} inputs ({', '.join(n.name for n in needed)}): "
                f"pass them all, example_input=(x, ...) (further inputs are attention masks)")
        try:
            with torch.no_grad():
                _ShapeRecorder(gm).run(*_inputs(example_input))
        except _NodeFailed as f:
            where, what = _node_site(gm, f.node)
            shape = tuple(getattr(example_input, "shape", ()))
            raise UnsupportedLayerError(
                where, what, f"running the model on example_input of shape {shape} failed "
                             f"here: {type(f.error).__name__}: {f.error}") from f.error
        spec = _build(gm, module, dtype, len(getattr(_inputs(example_input)[0], "shape", ())))
    finally:
        for name, m in module.named_modules():   # each module back in its own mode
            m.training = modes.get(name, m.training)
    return spec


def _inputs(example_input) -> tuple:
    """The model's inputs: ``example_input``, or its items when it is a tuple (the network
    input, then attention masks: ``converters.ops.attention.ExtraInput``)."""
    return tuple(example_input) if isinstance(example_input, tuple) else (example_input,)


def _refuse_training_mode(gm_train: fx.GraphModule, module: nn.Module, modes: dict) -> None:
    """Refuse a model whose current mode computes something else than its eval-mode function
    (the one the graph holds): a BatchNorm in training mode (batch statistics) or an active
    dropout. ``gm_train`` is the model traced in training mode, ``modes`` its modules' own
    ``training`` flags."""
    advice = "the graph holds the eval-mode function: call model.eval() before converting"
    for node in gm_train.graph.nodes:
        if node.op == "call_module":
            m = gm_train.get_submodule(node.target)
            why = active_dropout(m, str(node.target), modes)   # inside attention/transformers
            if why:
                raise UnsupportedLayerError(str(node.target), type(m).__name__, f"{why}; {advice}")
            if not modes.get(str(node.target), False):
                continue
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                raise UnsupportedLayerError(str(node.target), type(m).__name__,
                                            f"in training mode it normalises with the batch's "
                                            f"statistics; {advice}")
            if isinstance(m, nn.RNNBase) and m.dropout > 0 and m.num_layers > 1:
                raise UnsupportedLayerError(str(node.target), type(m).__name__,
                                            f"in training mode it drops units between layers "
                                            f"(dropout={m.dropout}); {advice}")
            if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
                raise UnsupportedLayerError(str(node.target), type(m).__name__,
                                            f"in training mode it drops units at random "
                                            f"(p={m.p}); {advice}")
            if isinstance(m, nn.RReLU):
                raise UnsupportedLayerError(str(node.target), "RReLU",
                                            f"in training mode it draws a random negative "
                                            f"slope for every element; {advice}")
        elif node.op == "call_function" and node.target is F.scaled_dot_product_attention:
            drop = dict(zip(("q", "k", "v", "mask", "p"), node.args), **node.kwargs).get(
                "p", node.kwargs.get("dropout_p", 0.0))
            stack = node.meta.get("nn_module_stack") or {}
            owner = next(reversed(stack.values()))[0] if stack else ""
            if drop != 0 and modes.get(owner, False):
                where, _ = _node_site(gm_train, node)
                raise UnsupportedLayerError(where, "scaled_dot_product_attention",
                                            f"in training mode its dropout (dropout_p={drop}) "
                                            f"is active; {advice}")
        elif node.op == "call_function" and any(node.target is f for f in ALIAS_FNS):
            stack = node.meta.get("nn_module_stack") or {}
            owner = next(reversed(stack.values()))[0] if stack else ""
            p, training = dropout_args(node.target, node.args, node.kwargs)
            if modes.get(owner, False) and training is True and p != 0:
                where, _ = _node_site(gm_train, node)
                raise UnsupportedLayerError(where, node.target.__name__,
                                            f"'{owner or type(module).__name__}' is in training "
                                            f"mode, where this dropout (p={p}) is active; "
                                            f"{advice}")


def _build(gm, module, dtype, rank: int) -> ArchSpec:
    """The ``ArchSpec`` of the traced ``gm``. The input's channel axis is 1 (``(batch, C,
    ...)``, and ``(batch, features)``); when that reading fails on an input of rank 3 or more,
    the last axis (token-wise data ``(batch, *tokens, features)``) is tried, and the error of the
    reading that got further through the model is raised when both fail."""
    try:
        return _Builder(gm, module, dtype, 1).build()
    except UnsupportedLayerError as first:
        if rank < 3:
            raise
        b = _Builder(gm, module, dtype, rank - 1)
        try:
            return b.build()
        except UnsupportedLayerError as second:
            if getattr(second, "progress", b.progress) > getattr(first, "progress", 1 << 30):
                raise second from None
            raise first from None


class _Builder:
    def __init__(self, gm, module, dtype, chan_dim: int = 1):
        self.gm, self.module, self.dtype = gm, module, dtype
        self.chan_dim = chan_dim   # the input's channel axis
        self.progress = 0          # fx nodes read so far
        self.ops, self.sizes, self.names = [], {}, {}
        self.vals = {}
        self.next_vid = 0
        self.used_modules = {}
        self.used_params = {}
        self.bn_of = {}   # node set -> the BatchNorm that reads it
        self.feature_owner = {}   # (node set, node-feature column) -> the module filling it
        self.rules = ops.RULES

    # -- helpers -------------------------------------------------------------------------------
    def fail(self, node, what, why):
        """Raise ``UnsupportedLayerError`` at ``node``: a module call is named by its module path,
        any other op by its fx name, prefixed with the path of the module whose ``forward``
        made it (``layer1.0:cat``) unless that is the root."""
        raise UnsupportedLayerError(_node_site(self.gm, node)[0], what, why)

    def new_vid(self):
        self.next_vid += 1
        return self.next_vid - 1

    def shape(self, node):
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            self.fail(node, "output", "does not produce a single tensor")
        return tuple(meta.shape)

    def tensor_arg(self, node, arg):
        if not isinstance(arg, fx.Node) or arg not in self.vals or self.vals[arg] is None:
            why = self.__dict__.get("untraced", {}).get(arg)   # a rule said why (ops.recurrent)
            self.fail(node, str(node.target), f"argument {arg!r} is not a traced tensor"
                                              + (f": {why}" if why else ""))
        return self.vals[arg]

    @staticmethod
    def value(vid, parts, chan, rank, flat, caxes=(1,), csplit=None) -> _Val:
        """A traced value: id, node sets along its channels, channel count, rank, flatten block,
        channel axes (``_Val``)."""
        return _Val(vid, parts, chan, rank, flat, tuple(caxes), csplit)

    def emit(self, node, op, val_in, *, chan=None, flat="same", rank=None, parts=None,
             caxes=None, csplit="same"):
        """Append a chain op that keeps the node sets of ``val_in`` (and, unless given, its
        channel axes)."""
        vid = self.new_vid()
        self.ops.append({**op, "in": [val_in.vid], "out": vid})
        self.vals[node] = _Val(vid, list(val_in.parts) if parts is None else parts,
                               val_in.chan if chan is None else chan,
                               len(self.shape(node)) if rank is None else rank,
                               val_in.flat if flat == "same" else flat,
                               val_in.caxes if caxes is None else tuple(caxes),
                               val_in.csplit if csplit == "same" else csplit)

    def new_nodeset(self, node, op, ins, size, name, caxes=None):
        """Append an op writing a new node set of ``size`` neurons; its value's channels lie on
        ``caxes`` (default: the first input's, one axis: 1 for ``(batch, C, ...)``, the last
        for token-wise data)."""
        ns = len(self.sizes)
        self.sizes[ns], self.names[ns] = size, name
        vid = self.new_vid()
        self.ops.append({**op, "in": [v.vid for v in ins], "out": vid, "ns": ns})
        if caxes is None:
            caxes = ins[0].caxes if ins else (1,)
        keep = ins and ins[0].caxes == tuple(caxes) and ins[0].chan == size
        self.vals[node] = _Val(vid, [ns], size, len(self.shape(node)), None, tuple(caxes),
                               ins[0].csplit if keep else None)
        return ns

    def channel_axis(self, node, what, x, where=None) -> int:
        """The one channel axis of value ``x``; refused (naming ``node``) when the channels are
        split over several axes, or when ``where`` ("first": axis 1, "last") says another."""
        if x.cdim is None:
            self.fail(node, what, f"its input's channels are split over axes {list(x.caxes)} "
                                  f"(sizes {list(x.csplit)}); merge them back first")
        if where == "first" and x.cdim != 1:
            self.fail(node, what, f"it reads channels on axis 1, but its input's channels "
                                  f"(features) are on axis {x.cdim} of shape "
                                  f"{self.shape(node.args[0])}: transpose them to axis 1 first")
        if where == "last" and x.cdim != x.rank - 1:
            self.fail(node, what, f"it reads the last axis, but its input's channels are on "
                                  f"axis {x.cdim} of shape {self.shape(node.args[0])} (for "
                                  f"token-wise data (batch, ..., features) the features must "
                                  f"be last: transpose them first)")
        return x.cdim

    def single_set(self, node, what, x) -> int:
        """The one node set of value ``x`` (refused after a concatenation or a flatten)."""
        if len(x.parts) != 1 or x.flat is not None:
            self.fail(node, what, "its input must be the channels of one layer (no cat/flatten)")
        return x.parts[0]

    def claim_module(self, node, m):
        path = node.target
        if path in self.used_modules:
            self.fail(node, type(m).__name__, "module called more than once (weight sharing)")
        for pname, p in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if p is None:
                continue
            if id(p) in self.used_params and ops.RULES["tie"].allow(
                    self, node, m, pname, self.used_params[id(p)]):
                continue   # a Linear reusing an embedding's weight (converters.ops.embedding)
            if id(p) in self.used_params:
                self.fail(node, type(m).__name__,
                          f"parameter '{path}.{pname}' is shared with "
                          f"'{self.used_params[id(p)]}' (tied weights)")
            self.used_params[id(p)] = f"{path}.{pname}"
        self.used_modules[path] = m

    # -- main walk -----------------------------------------------------------------------------
    def build(self) -> ArchSpec:
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if not placeholders:
            raise UnsupportedLayerError(type(self.module).__name__, "forward",
                                        "the model takes no input tensor")
        for node in self.gm.graph.nodes:
            try:
                getattr(self, "on_" + node.op)(node)
            except UnsupportedLayerError as e:
                e.progress = self.progress
                raise
            self.progress += 1
        return self.finish()

    def on_placeholder(self, node):
        if self.ops:   # a further input: read only as an attention mask (ops.attention)
            return self.rules["extra_input"].trace_placeholder(self, node)
        self.rules["input"].trace_placeholder(self, node)

    def on_get_attr(self, node):
        if self.rules["position"].trace_attr(self, node):   # a learned position, a CLS token
            return
        self.fail(node, f"get_attr {node.target}",
                  "a parameter, buffer or constant tensor is used outside a supported module "
                  "(e.g. F.linear with raw parameters, or a tensor created in forward)")

    def on_output(self, node):
        self.rules["output"].trace_output(self, node)

    # -- dispatch to the op rules ------------------------------------------------------------
    def on_call_module(self, node):
        m = self.gm.get_submodule(node.target)
        if self.rules["attention"].reads_scores(self, node):   # q @ k^T, softmax, @ v
            return
        t = type(m)
        if getattr(ops.module_rule(t), "reads_ids", False):   # nn.Embedding: integer ids
            return ops.module_rule(t).trace_module(self, node, m, None)
        x = self.tensor_arg(node, node.args[0]) if node.args else None
        if getattr(ops.module_rule(t), "reads_call", False):   # several tensors: attention
            return ops.module_rule(t).trace_module(self, node, m, x)
        if len(node.args) != 1 or node.kwargs:
            self.fail(node, t.__name__, "modules must be called with one tensor")
        rule = ops.module_rule(t)
        if rule is None:
            self.fail(node, t.__name__, _refusal(m) or "not supported")
        rule.trace_module(self, node, m, x)
        if self.__dict__.get("pending_ties"):   # its weight is an embedding's (tied)
            self.rules["tie"].emit(self, node)

    def _reads_attr(self, node) -> bool:
        """Whether ``node`` reads a parameter fetched outside a module (``on_get_attr``): then
        the ``position`` rule reads it."""
        attrs = self.__dict__.get("attrs")
        if attrs and any(a in attrs for a in node.all_input_nodes):
            self.rules["position"].trace_use(self, node)
            return True
        return False

    def on_call_function(self, node):
        if self.rules["attention"].reads_scores(self, node):   # q @ k^T, softmax, @ v
            return
        if self._reads_attr(node):
            return
        name = getattr(node.target, "__name__", str(node.target))
        rule = ops.function_rule(node.target, name)
        if rule is None:
            self.fail(node, f"function {name}", "not supported")
        rule.trace_function(self, node, node.target, node.args, node.kwargs, name)

    def on_call_method(self, node):
        if self.rules["attention"].reads_scores(self, node):   # q @ k^T, softmax, @ v
            return
        if self._reads_attr(node):
            return
        name = node.target
        rule = ops.method_rule(name)
        if rule is None:
            self.fail(node, f"method .{name}()", "not supported")
        if name.endswith("_"):
            src = node.args[0]
            if isinstance(src, fx.Node) and len(src.users) > 1:
                self.fail(node, name, "in-place op on a tensor that is used elsewhere")
        rule.trace_method(self, node, name)

    # -- finish --------------------------------------------------------------------------------
    def finish(self) -> ArchSpec:
        sd_keys = set(self.module.state_dict().keys())
        used = set(self.used_params.values()) | set(self.__dict__.get("tied_keys", ()))
        unused = sorted(sd_keys - used)
        if unused:
            raise UnsupportedLayerError(type(self.module).__name__, "state_dict",
                                        f"parameters/buffers not used by forward: {unused[:5]}")
        nodesets = analyse(self.ops, self.sizes, self.names)
        columns = list(NODE_FEATURES)
        used_cols = {c for op in self.ops for c in self.rules[op["op"]].feature_columns(op)}
        # a prefix of the global column order, so that column k means the same in every graph
        feats = columns[:max([1] + [columns.index(c) + 1 for c in used_cols])]
        kshapes = [k for k in (self.rules[op["op"]].kernel(op) for op in self.ops)
                   if k is not None]
        ranks = {len(k) for k in kshapes}
        if len(ranks) > 1:
            raise UnsupportedLayerError(type(self.module).__name__, "kernels",
                                        "mixing 1d/2d/3d kernels in one graph is unsupported")
        kshape = [max(k[d] for k in kshapes) for d in range(ranks.pop())] if kshapes else []
        return ArchSpec(ops=self.ops, nodesets=nodesets,
                        input={"channels": self.sizes[0], "shape": self.input_shape},
                        dtype=str(self.dtype).replace("torch.", ""), node_features=feats,
                        kernel_shape=kshape)
