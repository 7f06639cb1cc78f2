"""Trace any ``torch.nn`` model with ``torch.fx`` into an ``ArchSpec``.

The tracer treats ``torch.nn`` layers as leaves and traces through user modules. Every traced op
must be in the table below; anything else raises ``UnsupportedLayerError`` naming the fx node or
module path, because a silently wrong graph is worse than none (docs/design.md 2.3).
"""
from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass
from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .archspec import ArchSpec
from .errors import UnsupportedLayerError
from .symmetry import analyse

_ACT_MODULES = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Tanh: "tanh",
                nn.Sigmoid: "sigmoid", nn.GELU: "gelu", nn.SiLU: "silu"}
_ALIAS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                  nn.AlphaDropout)
_POOL_MODULES = {nn.MaxPool1d: "max_pool1d", nn.MaxPool2d: "max_pool2d", nn.MaxPool3d: "max_pool3d",
                 nn.AvgPool1d: "avg_pool1d", nn.AvgPool2d: "avg_pool2d", nn.AvgPool3d: "avg_pool3d",
                 nn.AdaptiveAvgPool1d: "adaptive_avg_pool1d",
                 nn.AdaptiveAvgPool2d: "adaptive_avg_pool2d",
                 nn.AdaptiveAvgPool3d: "adaptive_avg_pool3d",
                 nn.AdaptiveMaxPool1d: "adaptive_max_pool1d",
                 nn.AdaptiveMaxPool2d: "adaptive_max_pool2d",
                 nn.AdaptiveMaxPool3d: "adaptive_max_pool3d"}
_CONV = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_BN = {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}

_FN_ACTS = {torch.relu: "relu", F.relu: "relu", torch.tanh: "tanh", F.tanh: "tanh",
            torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.sin: "sin", F.gelu: "gelu",
            F.silu: "silu", F.leaky_relu: "leaky_relu"}
_METHOD_ACTS = {"relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh",
                "sigmoid": "sigmoid", "sigmoid_": "sigmoid", "sin": "sin", "sin_": "sin"}
_POOL_PARAMS = {
    "max_pool": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                 "divisor_override"),
    "adaptive_avg_pool": ("output_size",),
    "adaptive_max_pool": ("output_size", "return_indices"),
}
_POOL_NAMES = set(_POOL_MODULES.values())


def _pool_params(fn_name):
    params = _POOL_PARAMS[fn_name[:-2]]
    return params[:-1] if fn_name == "avg_pool1d" else params  # no divisor_override in 1d


def _is_pool_fn(fn, name):
    name = name.lstrip("_")
    if name not in _POOL_NAMES:
        return None
    homes = (F, torch._C._nn, torch)
    known = {getattr(h, n, None) for h in homes for n in (name, "_" + name)}
    return name if fn in known else None
_ALIAS_FNS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout}
_ALIAS_METHODS = {"contiguous", "clone", "detach"}
_NON_TENSOR_METHODS = {"size", "dim"}


def _jsonable(v):
    if isinstance(v, torch.Size):
        v = tuple(v)
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"cannot record argument {v!r}")


@dataclass
class _Val:
    vid: int
    parts: list           # node-set ids along the channel dimension
    chan: int             # number of channels
    rank: int
    flat: Optional[list]  # spatial shape folded into the feature dim by a flatten, else None


class _NoAutogradFunction(RuntimeError):
    pass


def _refuse_autograd_function(cls, *args, **kwargs):
    raise _NoAutogradFunction(f"custom autograd.Function {cls.__qualname__}")


_SUPPORTED_LEAVES = (set(_ACT_MODULES) | set(_ALIAS_MODULES) | set(_POOL_MODULES) | set(_CONV)
                     | set(_BN) | {nn.Flatten, nn.Linear, nn.LayerNorm})
_REFUSALS = [
    ((nn.RNNBase, nn.RNNCellBase), "recurrent layers are not supported"),
    ((nn.MultiheadAttention,), "attention is not supported"),
    ((nn.Transformer, nn.TransformerEncoder, nn.TransformerDecoder, nn.TransformerEncoderLayer,
      nn.TransformerDecoderLayer), "transformer layers are not supported"),
    ((nn.Embedding, nn.EmbeddingBag), "embedding tables (integer inputs) are not supported"),
    ((nn.PReLU,), "PReLU (a learned activation slope) is not supported"),
    ((nn.modules.conv._ConvTransposeNd,), "transposed convolutions are not supported"),
    ((nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm),
     "only BatchNorm and LayerNorm over features are supported"),
]


def _refusal(m: nn.Module) -> Optional[str]:
    """Why the ``torch.nn`` layer ``m`` cannot be converted, or None when it is supported."""
    if type(m) in _SUPPORTED_LEAVES:
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
    for node in gm.graph.nodes:
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if isinstance(m, nn.Linear):
                return torch.zeros(2, m.in_features, dtype=dtype)
            if type(m) in _CONV:
                for s in (32, 28, 64, 224, 16, 8):
                    x = torch.zeros(2, m.in_channels, *([s] * _CONV[type(m)]), dtype=dtype)
                    try:
                        with torch.no_grad():
                            module(x)
                        return x
                    except Exception:
                        continue
                break
            if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
                return torch.zeros(2, m.normalized_shape[0], dtype=dtype)
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
        try:
            with torch.no_grad():
                _ShapeRecorder(gm).run(example_input)
        except _NodeFailed as f:
            where, what = _node_site(gm, f.node)
            shape = tuple(getattr(example_input, "shape", ()))
            raise UnsupportedLayerError(
                where, what, f"running the model on example_input of shape {shape} failed "
                             f"here: {type(f.error).__name__}: {f.error}") from f.error
        spec = _Builder(gm, module, dtype).build()
    finally:
        for name, m in module.named_modules():   # each module back in its own mode
            m.training = modes.get(name, m.training)
    return spec


def _dropout_args(fn, args, kwargs) -> tuple:
    """(p, training) of a functional dropout call, with the function's defaults."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments.get("p"), bound.arguments.get("training")


def _refuse_training_mode(gm_train: fx.GraphModule, module: nn.Module, modes: dict) -> None:
    """Refuse a model whose current mode computes something else than its eval-mode function
    (the one the graph holds): a BatchNorm in training mode (batch statistics) or an active
    dropout. ``gm_train`` is the model traced in training mode, ``modes`` its modules' own
    ``training`` flags."""
    advice = "the graph holds the eval-mode function: call model.eval() before converting"
    for node in gm_train.graph.nodes:
        if node.op == "call_module":
            m = gm_train.get_submodule(node.target)
            if not modes.get(str(node.target), False):
                continue
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                raise UnsupportedLayerError(str(node.target), type(m).__name__,
                                            f"in training mode it normalises with the batch's "
                                            f"statistics; {advice}")
            if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
                raise UnsupportedLayerError(str(node.target), type(m).__name__,
                                            f"in training mode it drops units at random "
                                            f"(p={m.p}); {advice}")
        elif node.op == "call_function" and node.target in _ALIAS_FNS:
            stack = node.meta.get("nn_module_stack") or {}
            owner = next(reversed(stack.values()))[0] if stack else ""
            p, training = _dropout_args(node.target, node.args, node.kwargs)
            if modes.get(owner, False) and training is True and p != 0:
                where, _ = _node_site(gm_train, node)
                raise UnsupportedLayerError(where, node.target.__name__,
                                            f"'{owner or type(module).__name__}' is in training "
                                            f"mode, where this dropout (p={p}) is active; "
                                            f"{advice}")


class _Builder:
    def __init__(self, gm, module, dtype):
        self.gm, self.module, self.dtype = gm, module, dtype
        self.ops, self.sizes, self.names = [], {}, {}
        self.vals = {}
        self.next_vid = 0
        self.used_modules = {}
        self.used_params = {}
        self.bn_of = {}   # node set -> the BatchNorm that reads it

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
            self.fail(node, str(node.target), f"argument {arg!r} is not a traced tensor")
        return self.vals[arg]

    def emit(self, node, op, val_in, *, chan=None, flat="same", rank=None, parts=None):
        """Append a chain op that keeps the node sets of ``val_in``."""
        vid = self.new_vid()
        self.ops.append({**op, "in": [val_in.vid], "out": vid})
        self.vals[node] = _Val(vid, list(val_in.parts) if parts is None else parts,
                               val_in.chan if chan is None else chan,
                               len(self.shape(node)) if rank is None else rank,
                               val_in.flat if flat == "same" else flat)

    def new_nodeset(self, node, op, ins, size, name):
        ns = len(self.sizes)
        self.sizes[ns], self.names[ns] = size, name
        vid = self.new_vid()
        self.ops.append({**op, "in": [v.vid for v in ins], "out": vid, "ns": ns})
        self.vals[node] = _Val(vid, [ns], size, len(self.shape(node)), None)
        return ns

    def claim_module(self, node, m):
        path = node.target
        if path in self.used_modules:
            self.fail(node, type(m).__name__, "module called more than once (weight sharing)")
        for pname, p in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if p is None:
                continue
            if id(p) in self.used_params:
                self.fail(node, type(m).__name__,
                          f"parameter '{path}.{pname}' is shared with "
                          f"'{self.used_params[id(p)]}' (tied weights)")
            self.used_params[id(p)] = f"{path}.{pname}"
        self.used_modules[path] = m

    # -- main walk -----------------------------------------------------------------------------
    def build(self) -> ArchSpec:
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedLayerError(type(self.module).__name__, "forward",
                                        f"exactly one input tensor is supported, got "
                                        f"{len(placeholders)}")
        for node in self.gm.graph.nodes:
            getattr(self, "on_" + node.op)(node)
        return self.finish()

    def on_placeholder(self, node):
        shape = self.shape(node)
        if len(shape) < 2:
            self.fail(node, "input", f"input must be (batch, channels, ...), got shape {shape}")
        vid = self.new_vid()
        self.sizes[0], self.names[0] = shape[1], "input"
        self.ops.append({"op": "input", "out": vid, "ns": 0, "channels": shape[1],
                         "rank": len(shape) - 1})
        self.vals[node] = _Val(vid, [0], shape[1], len(shape), None)
        self.input_shape = list(shape[1:])

    def on_get_attr(self, node):
        self.fail(node, f"get_attr {node.target}",
                  "a parameter, buffer or constant tensor is used outside a supported module "
                  "(e.g. F.linear with raw parameters, or a tensor created in forward)")

    def on_output(self, node):
        arg = node.args[0]
        if not isinstance(arg, fx.Node):
            self.fail(node, "output", "the model must return a single tensor")
        val = self.tensor_arg(node, arg)
        if val.flat is not None:
            self.fail(node, "output", "a flattened feature map cannot be the output")
        self.ops.append({"op": "output", "in": [val.vid]})
        self.out_val = val

    # call_module --------------------------------------------------------------------------
    def on_call_module(self, node):
        m = self.gm.get_submodule(node.target)
        t = type(m)
        x = self.tensor_arg(node, node.args[0]) if node.args else None
        if len(node.args) != 1 or node.kwargs:
            self.fail(node, t.__name__, "modules must be called with one tensor")
        if t in _ALIAS_MODULES:
            self.vals[node] = x
            return
        if t in _ACT_MODULES:
            params = {}
            if t is nn.LeakyReLU:
                params["negative_slope"] = float(m.negative_slope)
            if t is nn.GELU:
                params["approximate"] = m.approximate
            self.emit(node, {"op": "act", "name": _ACT_MODULES[t], "params": params}, x)
            return
        if t in _POOL_MODULES:
            fn = _POOL_MODULES[t]
            kwargs = {k: getattr(m, k) for k in _pool_params(fn) if hasattr(m, k)}
            self.pool(node, fn, x, kwargs)
            return
        if t is nn.Flatten:
            self.flatten(node, x, m.start_dim, m.end_dim)
            return
        if t is nn.Linear:
            self.claim_module(node, m)
            self.linear(node, m, x)
            return
        if t in _CONV:
            self.claim_module(node, m)
            self.conv(node, m, x, _CONV[t])
            return
        if t in _BN:
            self.claim_module(node, m)
            self.batchnorm(node, m, x, _BN[t])
            return
        if t is nn.LayerNorm:
            self.claim_module(node, m)
            self.layernorm(node, m, x)
            return
        self.fail(node, t.__name__, _refusal(m) or "not supported")

    def linear(self, node, m, x):
        if x.rank != 2:
            self.fail(node, "Linear", "only (batch, features) inputs are supported")
        spatial = list(x.flat) if x.flat is not None else []
        if m.in_features != x.chan * math.prod(spatial):
            self.fail(node, "Linear", f"in_features {m.in_features} != {x.chan} channels x "
                                      f"{math.prod(spatial)}")
        op = {"op": "linear", "module": node.target, "in_features": m.in_features,
              "out_features": m.out_features, "bias": m.bias is not None, "spatial": spatial}
        self.new_nodeset(node, op, [x], m.out_features, node.target)

    def conv(self, node, m, x, d):
        if x.flat is not None or x.rank != d + 2:
            self.fail(node, type(m).__name__, f"expects (batch, channels, {d} spatial dims)")
        op = {"op": "conv", "module": node.target, "dim": d, "in_channels": m.in_channels,
              "out_channels": m.out_channels, "kernel_size": list(m.kernel_size),
              "stride": list(m.stride), "padding": _jsonable(m.padding),
              "dilation": list(m.dilation), "groups": m.groups, "padding_mode": m.padding_mode,
              "bias": m.bias is not None}
        self.new_nodeset(node, op, [x], m.out_channels, node.target)

    def single_set(self, node, what, x):
        if len(x.parts) != 1 or x.flat is not None:
            self.fail(node, what, "its input must be the channels of one layer (no cat/flatten)")
        return x.parts[0]

    def batchnorm(self, node, m, x, d):
        pre = self.single_set(node, type(m).__name__, x)
        if not (m.affine and m.track_running_stats):
            self.fail(node, type(m).__name__, "BatchNorm needs affine=True and "
                                              "track_running_stats=True")
        if x.rank not in (d + 1, d + 2) or (d == 1 and x.rank not in (2, 3)):
            self.fail(node, type(m).__name__, "unexpected input rank")
        other = self.bn_of.setdefault(pre, node.target)
        if other != node.target:   # both would keep their running statistics on these neurons
            self.fail(node, type(m).__name__, f"the neurons of '{self.names[pre]}' are already "
                                              f"normalised by the BatchNorm '{other}'; two "
                                              f"BatchNorms of one layer are unsupported")
        op = {"op": "batchnorm", "module": node.target, "dim": d, "num_features": m.num_features,
              "eps": float(m.eps), "momentum": m.momentum, "pre": pre}
        self.new_nodeset(node, op, [x], m.num_features, node.target)

    def layernorm(self, node, m, x):
        pre = self.single_set(node, "LayerNorm", x)
        if tuple(m.normalized_shape) != (x.chan,) or x.rank != 2:
            self.fail(node, "LayerNorm", "only LayerNorm over the features of (batch, features)")
        if not m.elementwise_affine:
            self.fail(node, "LayerNorm", "LayerNorm needs elementwise_affine=True")
        op = {"op": "layernorm", "module": node.target, "normalized_shape": [x.chan],
              "eps": float(m.eps), "bias": m.bias is not None, "pre": pre}
        self.new_nodeset(node, op, [x], x.chan, node.target)

    def pool(self, node, fn, x, kwargs):
        d = int(fn[-2])
        if x.flat is not None or x.rank != d + 2:
            self.fail(node, fn, f"expects (batch, channels, {d} spatial dims)")
        if kwargs.pop("return_indices", False):
            self.fail(node, fn, "return_indices=True is unsupported")
        kwargs = {k: _jsonable(v) for k, v in kwargs.items()}
        self.emit(node, {"op": "pool", "fn": fn, "kwargs": kwargs}, x)

    def flatten(self, node, x, start, end):
        rank = x.rank
        start, end = start % rank, end % rank
        if start == 0:
            self.fail(node, "flatten", "flattening the batch dimension is unsupported")
        if start == end:
            self.vals[node] = x
            return
        if start == 1:
            if end != rank - 1 or x.flat is not None:
                self.fail(node, "flatten", "only flatten(1) of a whole feature map is supported")
            spatial = list(self.shape(node.args[0])[2:])
            self.emit(node, {"op": "flatten", "start_dim": 1, "end_dim": -1}, x, flat=spatial)
        else:  # merges spatial dims only: channels untouched
            self.emit(node, {"op": "flatten", "start_dim": start, "end_dim": end}, x)

    # call_function / call_method ---------------------------------------------------------
    def on_call_function(self, node):
        self.function(node, node.target, node.args, node.kwargs, name=getattr(
            node.target, "__name__", str(node.target)))

    def on_call_method(self, node):
        name = node.target
        if name in _NON_TENSOR_METHODS:
            self.vals[node] = None
            return
        if name.endswith("_") and name in _METHOD_ACTS:
            src = node.args[0]
            if isinstance(src, fx.Node) and len(src.users) > 1:
                self.fail(node, name, "in-place op on a tensor that is used elsewhere")
        if name in _METHOD_ACTS:
            self.emit(node, {"op": "act", "name": _METHOD_ACTS[name], "params": {}},
                      self.tensor_arg(node, node.args[0]))
            return
        if name in _ALIAS_METHODS:
            self.vals[node] = self.tensor_arg(node, node.args[0])
            return
        fn = {"add": operator.add, "add_": operator.add, "mul": operator.mul,
              "sub": operator.sub, "div": operator.truediv, "flatten": torch.flatten,
              "mean": torch.mean}.get(name)
        if name.endswith("_") and fn is not None:
            src = node.args[0]
            if isinstance(src, fx.Node) and len(src.users) > 1:
                self.fail(node, name, "in-place op on a tensor that is used elsewhere")
        if fn is not None:
            self.function(node, fn, node.args, node.kwargs, name=name)
            return
        if name in ("view", "reshape"):
            self.reshape(node)
            return
        self.fail(node, f"method .{name}()", "not supported")

    def reshape(self, node):
        x = self.tensor_arg(node, node.args[0])
        src, out = self.shape(node.args[0]), self.shape(node)
        if src == out:
            self.vals[node] = x
        elif len(out) == 2 and out[0] == src[0] and len(src) > 2:
            self.flatten(node, x, 1, -1)
        else:
            self.fail(node, "view/reshape", f"reshape {src} -> {out} mixes channels")

    def function(self, node, fn, args, kwargs, name):
        if fn in _FN_ACTS:
            x = self.tensor_arg(node, args[0])
            act = _FN_ACTS[fn]
            params = {}
            if act == "leaky_relu":
                slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
                params["negative_slope"] = float(slope)
            if act == "gelu":
                params["approximate"] = kwargs.get("approximate", "none")
            self.emit(node, {"op": "act", "name": act, "params": params}, x)
            return
        if fn in _ALIAS_FNS:
            p, training = _dropout_args(fn, args, kwargs)
            if training is not False and p != 0:   # F.dropout's default is training=True
                self.fail(node, name, f"this dropout (p={p}) is active in eval mode too "
                                      f"(training={training!r}); pass training=self.training")
            self.vals[node] = self.tensor_arg(node, args[0])
            return
        pool = _is_pool_fn(fn, name)
        if pool is not None:
            names = _pool_params(pool)
            if len(args) - 1 > len(names):
                self.fail(node, pool, "unexpected arguments")
            kwargs = {**dict(zip(names, args[1:])), **kwargs}
            self.pool(node, pool, self.tensor_arg(node, args[0]), kwargs)
            return
        if fn is torch.flatten:
            x = self.tensor_arg(node, args[0])
            start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
            self.flatten(node, x, start, end)
            return
        if fn is torch.mean:
            self.mean(node, args, kwargs)
            return
        if fn is torch.cat:
            self.cat(node, args, kwargs)
            return
        if fn in (operator.add, operator.iadd, torch.add, operator.mul, operator.imul, torch.mul,
                  operator.sub, operator.isub, torch.sub, operator.truediv, torch.div):
            self.arith(node, fn, args, kwargs)
            return
        self.fail(node, f"function {name}", "not supported")

    def mean(self, node, args, kwargs):
        x = self.tensor_arg(node, args[0])
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        dims = [dim] if isinstance(dim, int) else list(dim or [])
        dims = [d % x.rank for d in dims]
        if not dims or 0 in dims or 1 in dims or x.flat is not None:
            self.fail(node, "mean", "only means over spatial dimensions are supported")
        self.emit(node, {"op": "mean", "dim": dims, "keepdim": bool(keepdim)}, x)

    def cat(self, node, args, kwargs):
        tensors = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        vals = [self.tensor_arg(node, t) for t in tensors]
        rank = vals[0].rank
        if dim % rank != 1 or any(v.flat is not None for v in vals):
            self.fail(node, "cat", "only concatenation along the channel dimension is supported")
        seen = set()
        for p in (p for v in vals for p in v.parts):
            if p in seen:   # cat([h, h]), cat([h, relu(h)]), cat([cat([h, g]), h]), ...
                self.fail(node, "cat", f"the neurons of '{self.names[p]}' appear twice in one "
                                       f"concatenation; a neuron feeds a layer through one edge, "
                                       f"so the graph cannot represent it (concatenate distinct "
                                       f"layers)")
            seen.add(p)
        vid = self.new_vid()
        self.ops.append({"op": "cat", "in": [v.vid for v in vals], "out": vid, "dim": 1})
        self.vals[node] = _Val(vid, [p for v in vals for p in v.parts],
                               sum(v.chan for v in vals), rank, None)

    def arith(self, node, fn, args, kwargs):
        if kwargs.get("alpha", 1) != 1 or len(args) != 2:
            self.fail(node, str(fn), "only binary arithmetic without alpha is supported")
        a, b = args
        ta, tb = isinstance(a, fx.Node) and self.vals.get(a) is not None, \
            isinstance(b, fx.Node) and self.vals.get(b) is not None
        kind = {operator.add: "add", operator.iadd: "add", torch.add: "add",
                operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
                operator.sub: "sub", operator.isub: "sub", torch.sub: "sub",
                operator.truediv: "div", torch.div: "div"}[fn]
        if ta and tb:
            if kind != "add":
                self.fail(node, kind, "only additions of two tensors (residuals) are supported")
            va, vb = self.vals[a], self.vals[b]
            sa, sb = self.single_set(node, "add", va), self.single_set(node, "add", vb)
            if sa == sb:
                self.fail(node, "add", "adding a layer to itself is unsupported")
            if self.shape(a) != self.shape(b):
                self.fail(node, "add", "broadcasting additions are unsupported")
            name = f"add:{node.name}"
            self.new_nodeset(node, {"op": "add"}, [va, vb], va.chan, name)
            return
        if not (ta or tb):
            self.fail(node, kind, "arithmetic on non-tensors")
        const = b if ta else a
        if not isinstance(const, (int, float)) or isinstance(const, bool):
            self.fail(node, kind, f"only Python numbers may be combined with a layer, got "
                                  f"{type(const).__name__}")
        x = self.vals[a] if ta else self.vals[b]
        if x.flat is not None and kind in ("add", "sub"):
            self.fail(node, kind, "adding constants to a flattened map is unsupported")
        self.emit(node, {"op": "scalar", "fn": kind, "const": float(const), "reverse": not ta}, x)

    # -- finish --------------------------------------------------------------------------------
    def finish(self) -> ArchSpec:
        sd_keys = set(self.module.state_dict().keys())
        used = set(self.used_params.values())
        unused = sorted(sd_keys - used)
        if unused:
            raise UnsupportedLayerError(type(self.module).__name__, "state_dict",
                                        f"parameters/buffers not used by forward: {unused[:5]}")
        nodesets = analyse(self.ops, self.sizes, self.names)
        feats = ["bias"]
        if any(op["op"] == "batchnorm" for op in self.ops):
            feats += ["bn_mean", "bn_var", "bn_count"]
        kshapes = [op["kernel_size"] for op in self.ops if op["op"] == "conv"]
        kshapes += [op["spatial"] for op in self.ops if op["op"] == "linear" and op["spatial"]]
        ranks = {len(k) for k in kshapes}
        if len(ranks) > 1:
            raise UnsupportedLayerError(type(self.module).__name__, "kernels",
                                        "mixing 1d/2d/3d kernels in one graph is unsupported")
        kshape = [max(k[d] for k in kshapes) for d in range(ranks.pop())] if kshapes else []
        return ArchSpec(ops=self.ops, nodesets=nodesets,
                        input={"channels": self.sizes[0], "shape": self.input_shape},
                        dtype=str(self.dtype).replace("torch.", ""), node_features=feats,
                        kernel_shape=kshape)
