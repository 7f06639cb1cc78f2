"""ScaleGMN, ScaleGMN-B and the permutation-only GMN on parameter graphs.

Shapes: node states ``h`` (N, d), forward edge states ``e`` (E, d) for ``j -> i``, backward edge
states ``eb`` (E, d) (same order; the edge seen from ``i``). Symmetry (docs/methods.md 2):
under an action with factors q, ``h_i -> q_i h_i``, ``e_ij -> q_i / q_j e_ij``,
``eb_ij -> q_j / q_i eb_ij``; I/O neurons have q = 1. Every node is processed by the functions
of its own group (``fixed``, ``perm``, ``sign``, ``scale``, ``linear``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from torch_geometric.utils import scatter

from converters.graph import pad_shape
from converters.groups import EDGE_TYPES, GROUP_ID, GROUPS, NODE_FEATURES, ROLES
from converters.layout import kernel_slots

from .config import ModelConfig
from .engines import dense_engine, io_nodes, node_groups, sparse_engine
from .nn import MLP, GroupDispatch, ScaleEq, ScaleInv, gate_near_one, norm_preserving
from .spec import SpecInfo, feature_mask

_RESIDUAL = EDGE_TYPES.index("residual")


def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a table of a few rows (T, d) and many indices (M,) -> (M, d), as a
    one-hot product: the same values, and a backward pass that is one (T x M) @ (M x d) matmul
    instead of an accumulating ``index_put`` of M rows into T (serial on the CPU: 5 % of a
    training step at the MNIST-INR workload)."""
    return F.one_hot(index, table.shape[0]).to(table.dtype) @ table


def reciprocal_bound(dtype: torch.dtype) -> float:
    """The largest ``|1/W|`` a backward edge takes before it counts as an exact zero:
    ``finfo(dtype).max ** (1/4)`` (1.4e9 in float32/bfloat16, 1.2e77 in float64), so that
    products of a few such values in the backward messages stay finite."""
    return float(torch.finfo(dtype).max) ** 0.25


class EdgeUpdate(nn.Module):
    """``e' = (D e) * chi([inv(h_src); inv(h_dst)])``: transforms like ``e``.

    ``inv`` is each endpoint's own ScaleInv; the first layer of ``chi`` is applied per node and
    summed per edge (the same map as on the concatenation, without materialising it)."""

    def __init__(self, groups, d, d_out, cfg):
        super().__init__()
        self.inv = GroupDispatch(groups, lambda g: ScaleInv(g, d, cfg.sign_inv, cfg.scale_inv,
                                                            cfg.layer_norm))
        self.D = nn.Linear(d, d_out, bias=False)
        self.chi = MLP(2 * d, d, d_out, cfg.layer_norm, cfg.dropout)
        gate_near_one(self.chi)
        norm_preserving(self.D)

    def forward(self, eng, h, e, reverse=False, De=None):
        """``De``: ``D(e)`` when the caller has it already (computed with another map of ``e``);
        with a chunked engine (``eng.lean_chunk``) ``D`` is applied inside each chunk."""
        k = eng.node_map(self.inv, h)
        W, b = self.chi.lin1.weight, self.chi.lin1.bias
        d = k.shape[-1]
        ac = F.linear(k, torch.cat([W[:, :d], W[:, d:]]))
        a, c = ac.split(W.shape[0], dim=-1)
        a = a + b
        if De is not None:
            g, gmap = De, None
        elif eng.lean_chunk:
            g, gmap = e, self.D
        else:
            g, gmap = self.D(e), None
        return (eng.edge_gate(self.chi.from_hidden, g, c, a, gmap) if reverse else
                eng.edge_gate(self.chi.from_hidden, g, a, c, gmap))


def _linear2(x, first: nn.Linear, second):
    """``(first(x), second(x))`` with one matmul when ``second`` is a bias-free linear map too
    (``None`` when there is no second map)."""
    if second is None:
        return first(x), None
    n = first.out_features
    return F.linear(x, torch.cat([first.weight, second.weight])).split(
        [n, second.out_features], dim=-1)


class GNNLayer(nn.Module):
    """One message-passing iteration (forward, or bidirectional with ``bidir``)."""

    def __init__(self, groups, cfg: ModelConfig, bidir: bool, update_edges: bool):
        super().__init__()
        d = cfg.hidden
        eq = lambda d_in, d_out: (lambda g: ScaleEq(d_in, d_out, g, d, cfg.sign_inv,
                                                     cfg.scale_inv, cfg.layer_norm, cfg.dropout))
        self.bidir, self.mode = bidir, cfg.backward_edges
        self.A_v, self.A_e = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.msg = GroupDispatch(groups, eq(d, d))
        self.upd = GroupDispatch(groups, eq((3 if bidir else 2) * d, d))
        self.edge = EdgeUpdate(groups, d, d, cfg) if update_edges else None
        if bidir:
            self.B_v, self.B_e = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
            if self.mode == "division_free":
                self.B_h = nn.Linear(d, d, bias=False)
                self.phi_bw = GroupDispatch(groups, lambda g: nn.Sequential(
                    ScaleInv(g, 2 * d, cfg.sign_inv, cfg.scale_inv, cfg.layer_norm),
                    MLP(2 * d, d, d, cfg.layer_norm, cfg.dropout)))
            else:
                self.msg_bw = GroupDispatch(groups, eq(d, d))
                self.edge_bw = EdgeUpdate(groups, d, d, cfg) if update_edges else None
        self.skip = nn.Linear(d, d, bias=False) if cfg.residual else None
        self.drop = nn.Dropout(cfg.dropout)
        for lin in (self.A_v, self.A_e) + ((self.B_v, self.B_e) if bidir else ()):
            norm_preserving(lin)

    def forward(self, eng, h, e, eb):
        # forward messages j -> i: (A_e e_ij) * (A_v h_j) transforms by q_i; D e (the edge
        # update's linear map) shares the pass over e
        if eng.lean_chunk or (eng.restricted and self.edge is None):
            # A_e (and D) inside the engine's recomputed chunks, or on the edges it evaluates
            parts = [h, eng.message(self.msg, e, self.A_v(h), "src", "dst", "dst", self.A_e)]
            De = None
        else:
            Ae, De = _linear2(e, self.A_e, self.edge.D if self.edge is not None else None)
            parts = [h, eng.message(self.msg, Ae, self.A_v(h), "src", "dst", "dst")]
        if self.bidir:
            if self.mode == "division_free":
                # edge i -> k seen from i: u = [(B_e e_ik) * (B_v h_i); h_k] transforms by q_k
                zb = eng.edge_times_node(self.B_e(e), self.B_v(h), "src")
                u = eng.edge_cat_node(zb, h, "dst")
                s = eng.sum_to(eng.edge_map(self.phi_bw, u, "dst"), "src")
                parts.append(self.B_h(h) * s)
            else:
                # backward messages k -> i along i -> k: (B_e eb_ik) * (B_v h_k), by q_i
                # (B_e is not merged with edge_bw.D: the last layer's eb may be unused)
                ebm = ((eb, self.B_e) if eng.lean_chunk or eng.restricted else
                       (self.B_e(eb), None))
                parts.append(eng.message(self.msg_bw, ebm[0], self.B_v(h), "dst", "src", "src",
                                         ebm[1]))
        h_new = eng.node_map(self.upd, torch.cat(parts, dim=-1))
        if self.edge is not None:
            e = self.edge(eng, h, e, De=De)
            if self.bidir and self.mode != "division_free" and self.edge_bw is not None:
                eb = self.edge_bw(eng, h, eb)
        if self.skip is not None:
            h_new = h_new + self.skip(h)
        return self.drop(h_new), e, eb


class ScaleGMN(nn.Module):
    """ScaleGMN (``bidirectional=False``), ScaleGMN-B (``True``) and, with
    ``permutation_only``, the GMN ablation (every hidden neuron treated as ``perm``).

    ``forward(batch)``: invariant task -> (B, out_dim); equivariant task -> a ``Batch`` with the
    input's structure, values ``W + alpha_l * delta`` and the raw ``delta_x`` / ``delta_edge_attr``
    attached.
    """

    def __init__(self, cfg: ModelConfig, spec, bidirectional=False, permutation_only=False):
        super().__init__()
        info = SpecInfo.of(spec)
        self.cfg, self.info = cfg, info
        self.bidir, self.perm_only = bidirectional, permutation_only
        groups = ({"fixed", "perm"} if permutation_only else
                  set(info.groups) | {"fixed"})
        if permutation_only and info.groups - {"fixed"}:
            groups.add("perm")
        self.groups = tuple(g for g in GROUPS if g in groups)
        self.input_norm = permutation_only if cfg.input_norm is None else cfg.input_norm
        d = cfg.hidden
        kinds = [NODE_FEATURES[n] for n in info.feature_names]
        self.neuron_cols = [i for i, k in enumerate(kinds) if k == "neuron"]
        self.inv_cols = [i for i, k in enumerate(kinds) if k == "invariant"]
        if any(k == "inverse" for k in kinds):
            raise NotImplementedError("node features of type 'inverse' are not embedded yet")
        self.embed_x = nn.Linear(len(self.neuron_cols), d, bias=False)
        self.embed_inv = MLP(len(self.inv_cols), d, d, cfg.layer_norm) if self.inv_cols else None
        self.embed_e = nn.Linear(info.fe, d, bias=False)
        self.embed_eb = (nn.Linear(info.fe, d, bias=False)
                         if bidirectional and cfg.backward_edges != "division_free" else None)
        g = torch.Generator().manual_seed(0)
        self.pe_in = nn.Parameter(torch.randn(info.n_in, d, generator=g) * 0.5)
        self.pe_out = nn.Parameter(torch.randn(info.n_out, d, generator=g) * 0.5)
        self.pe_layer = nn.Parameter(1 + 0.1 * torch.randn(info.n_layers, d, generator=g))
        self.pe_edge = nn.Parameter(1 + 0.1 * torch.randn(len(EDGE_TYPES), d, generator=g))
        # per-layer input scales (a constant factor per node set: equivariant); set from the
        # example data's typical magnitudes when ``spec`` holds values (``data_scale``)
        self.x_scale = nn.Parameter(torch.ones(info.n_layers))
        self.e_scale = nn.Parameter(torch.ones(info.n_layers))
        self.eb_scale = nn.Parameter(torch.ones(info.n_layers))
        if cfg.data_scale and hasattr(spec, "edge_attr"):
            self._scale_from(spec)
        if not cfg.io_embeddings:
            self.pe_in.requires_grad_(False).zero_()
            self.pe_out.requires_grad_(False).zero_()
        if not cfg.layer_embeddings:
            self.pe_layer.requires_grad_(False).fill_(1.0)
        if not cfg.edge_type_embeddings:
            self.pe_edge.requires_grad_(False).fill_(1.0)
        equivariant = cfg.task == "equivariant"
        self.layers = nn.ModuleList([
            GNNLayer(self.groups, cfg, bidirectional,
                     update_edges=equivariant or t < cfg.layers - 1 or cfg.layers == 1)
            for t in range(cfg.layers)])
        if equivariant:
            n_x = len(self.neuron_cols)
            self.node_head = GroupDispatch(self.groups, lambda gr: ScaleEq(
                d, n_x, gr, d, cfg.sign_inv, cfg.scale_inv, cfg.layer_norm))
            self.edge_head = EdgeUpdate(self.groups, d, info.fe, cfg)
            self.alpha = nn.Parameter(torch.full((info.n_layers,), float(cfg.edit_init)))
            self.beta = nn.Parameter(torch.full((info.n_layers,), float(cfg.edit_init)))
        else:
            io = (info.n_in + info.n_out) * d
            if cfg.readout == "full_graph":
                self.read_inv = GroupDispatch(self.groups, lambda gr: ScaleInv(
                    gr, d, cfg.sign_inv, cfg.scale_inv, cfg.layer_norm))
                self.read_mlp = MLP(d, d, d, cfg.layer_norm, cfg.dropout)
                self.head = MLP(d + io, d, cfg.out_dim, cfg.layer_norm, cfg.dropout)
            else:
                self.head = MLP(io, d, cfg.out_dim, cfg.layer_norm, cfg.dropout)
        from .published_style import apply as apply_style
        apply_style(self, cfg)      # the published model's choices, where cfg asks for them

    @torch.no_grad()
    def _scale_from(self, batch):
        """1 / median |value| per node set, over the example batch (weights by the layer they
        enter, biases by their own layer; backward-edge values, from ``backward_values``,
        likewise)."""
        dst = batch.edge_index[1]
        ea, mask = batch.edge_attr.double(), batch.edge_mask
        bw = self.backward_values(batch, ea, mask)
        for k in range(self.info.n_layers):
            edges = batch.layer[dst] == k
            for vals, scale in ((ea[edges][mask[edges]], self.e_scale),
                                (bw[edges][mask[edges]], self.eb_scale),
                                (batch.x[batch.layer == k, 0].double(), self.x_scale)):
                nz = vals[vals != 0].abs()
                if nz.numel():
                    scale[k] = 1.0 / float(nz.median())

    def backward_values(self, batch, ea: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(E, Fe) values that ScaleGMN-B's backward edges ``i -> j`` are embedded from: the one
        rule for the embedding and for the data scaling (``eb_scale``).

        ``backward_edges="reciprocal"``: ``1/W`` on edges with a ``scale`` or ``linear``
        endpoint (on every edge with ``reciprocal_on_sign``), ``W`` on the others (sign and
        permutation endpoints: ``W`` already transforms as a backward edge there, since
        ``1/s = s`` for a sign). ``"forward"``: ``W`` everywhere. Both transform by
        ``q_j / q_i``. Reciprocals of padding, of exact zeros and of weights with
        ``|1/W| > reciprocal_bound(dtype)`` are 0: without that bound a float32 weight below
        about 1e-21 made the backward messages overflow (NaN/inf). The bound is far outside
        the range of trained weights, and equivariance is exact for every action that keeps
        each weight on its side of it."""
        if self.cfg.backward_edges != "reciprocal":
            return ea
        src, dst = batch.edge_index
        if self.cfg.reciprocal_on_sign:
            scaling = torch.ones(src.shape[0], dtype=torch.bool, device=ea.device)
        else:
            g = self._groups_of(batch)
            rescaled = (g == GROUP_ID["scale"]) | (g == GROUP_ID["linear"])
            scaling = rescaled[src] | rescaled[dst]
        real = mask & (ea.abs() >= 1.0 / reciprocal_bound(ea.dtype)) & scaling[:, None]
        recip = torch.where(real, 1.0 / torch.where(real, ea, torch.ones_like(ea)),
                            torch.zeros_like(ea))
        return torch.where(scaling[:, None], recip, ea)

    # -- what the model claims -----------------------------------------------------------------
    def claimed_groups(self) -> tuple:
        """The symmetry groups (DESIGN vocabulary) this model is equivariant/invariant to."""
        if self.perm_only:
            return ("fixed", "perm")
        return GROUPS

    # -- inputs ----------------------------------------------------------------------------------
    @staticmethod
    def _archs(batch) -> tuple:
        """The architectures of a batch's networks, in batch order."""
        return tuple(batch.arch) if isinstance(batch.arch, list) else (batch.arch,)

    def _groups_of(self, batch):
        """(N,) group ids on the batch's device (every non-fixed node ``perm`` for GMN)."""
        return node_groups(self._archs(batch), self.perm_only).to(batch.edge_index.device)

    def _engine(self, batch, groups=None):
        """The engine for ``batch``, built from its architectures (cached; ``groups`` is
        accepted for compatibility and not read)."""
        archs = self._archs(batch)
        one = all(a is archs[0] or a == archs[0] for a in archs[1:])
        kind = self.cfg.engine
        if kind == "dense" and not one:
            raise ValueError("the dense engine needs a batch of one architecture; use "
                             "engine='sparse' or 'auto' for mixed batches")
        device = str(batch.edge_index.device)
        if kind == "dense" or (kind == "auto" and one):
            lean = self.cfg.checkpoint_chunk if self.cfg.checkpoint else 0
            return dense_engine(archs[0], len(archs), self.perm_only, device, lean_chunk=lean)
        return sparse_engine(archs, self.perm_only, device)

    def _to_model_grid(self, t, batch):
        """(E, Fe_batch) -> (E, Fe_model): kernels re-centred in the model's kernel grid."""
        have, want = pad_shape(batch), tuple(self.info.kernel_shape)
        if have == want:
            return t
        if len(have) and len(want) and (len(have) != len(want) or
                                        any(h > w for h, w in zip(have, want))):
            raise ValueError(f"batch kernels {have} do not fit the model's {want}; build the "
                             f"model with a spec that includes the largest kernel")
        slots = kernel_slots(have, want) if want else torch.zeros(1, dtype=torch.long)
        out = t.new_zeros(t.shape[0], self.info.fe)
        out[:, slots.to(t.device)] = t
        return out

    def _batch_vector(self, batch):
        b = getattr(batch, "batch", None)
        return b if b is not None else torch.zeros(batch.num_nodes, dtype=torch.long,
                                                   device=batch.edge_index.device)

    def _normalise_inputs(self, batch, x, ea, mask):
        """GMN's input normalisation: standardise each layer of each network (permutation
        invariant, not scale equivariant)."""
        bv = self._batch_vector(batch)
        L = self.info.n_layers
        key_e = bv[batch.edge_index[1]] * L + batch.layer[batch.edge_index[1]]
        m = mask.to(ea.dtype)
        n = len(self._archs(batch)) * L
        cnt = scatter(m.sum(1), key_e, dim=0, dim_size=n, reduce="sum").clamp_min(1)
        mean = scatter((ea * m).sum(1), key_e, dim=0, dim_size=n, reduce="sum") / cnt
        var = scatter((((ea - mean[key_e, None]) * m) ** 2).sum(1), key_e, dim=0, dim_size=n,
                      reduce="sum") / cnt
        ea = (ea - mean[key_e, None]) / torch.sqrt(var[key_e, None] + 1e-8) * m
        key_n = bv * L + batch.layer
        mean_x = scatter(x, key_n, dim=0, dim_size=n, reduce="mean")
        var_x = scatter((x - mean_x[key_n]) ** 2, key_n, dim=0, dim_size=n, reduce="mean")
        x = (x - mean_x[key_n]) / torch.sqrt(var_x[key_n] + 1e-8)
        return x, ea

    def _check(self, batch):
        """The batch fits the sizes the model was built for (read from its architectures, on
        the host: no device synchronisation)."""
        seen = SpecInfo.of(self._archs(batch))
        if seen.n_layers > self.info.n_layers:
            raise ValueError(f"batch has networks with {seen.n_layers} node sets; "
                             f"the model was built for {self.info.n_layers}")
        for role, have, n in (("input", seen.n_in, self.info.n_in),
                              ("output", seen.n_out, self.info.n_out)):
            if have > n:
                raise ValueError(f"batch has more {role} neurons than the model was built for "
                                 f"({n})")
        if batch.x.shape[1] > self.info.n_features:
            raise ValueError(f"batch has {batch.x.shape[1]} node-feature columns; the model was "
                             f"built for {self.info.n_features}")

    def embed(self, batch, eng):
        """Initial states: ``h`` (N, d) transforms by q; ``e`` by q_i/q_j; ``eb`` by q_j/q_i."""
        dtype = self.embed_e.weight.dtype
        x = batch.x.to(dtype)
        if x.shape[1] < self.info.n_features:
            x = F.pad(x, (0, self.info.n_features - x.shape[1]))
        ea = self._to_model_grid(batch.edge_attr.to(dtype), batch)
        emask = self._to_model_grid(batch.edge_mask, batch)
        if self.input_norm:
            x, ea = self._normalise_inputs(batch, x, ea, emask)
        x = x * self.x_scale[batch.layer][:, None]
        h = self.embed_x(x[:, self.neuron_cols])
        if self.embed_inv is not None:
            h = h * (1 + self.embed_inv(x[:, self.inv_cols]))
        role = batch.role
        inp, out = role == ROLES.index("input"), role == ROLES.index("output")
        io = batch.io_index.clamp_min(0)
        pe_add = (torch.where(inp[:, None], self.pe_in[io.clamp_max(self.info.n_in - 1)], 0.0)
                  + torch.where(out[:, None], self.pe_out[io.clamp_max(self.info.n_out - 1)],
                                0.0))
        pe_mul = torch.where((inp | out)[:, None], torch.ones_like(h), self.pe_layer[batch.layer])
        h = h * pe_mul + pe_add
        dst_layer = batch.layer[batch.edge_index[1]]
        pe_edge = _rows(self.pe_edge, batch.edge_type)
        e = self.embed_e(ea * self.e_scale[dst_layer][:, None]) * pe_edge
        eb = None
        if self.embed_eb is not None:
            bw = self.backward_values(batch, ea, emask)
            eb = self.embed_eb(bw * self.eb_scale[dst_layer][:, None]) * pe_edge
        return h, e, eb

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, batch, return_states: bool = False):
        self._check(batch)
        groups = self._groups_of(batch)
        eng = self._engine(batch, groups)
        h, e, eb = self.embed(batch, eng)
        states = [(h, e, eb)]
        for t, layer in enumerate(self.layers):
            fn = self._layer_fn(t)
            eng_t = eng
            if t == len(self.layers) - 1 and not return_states and self._reads_io_only():
                # the readout reads only I/O nodes: the last layer's messages into other
                # nodes are dead code (same output; about a fifth of the step's FLOPs)
                eng_t = eng.toward(io_nodes(self._archs(batch)))
            if self.cfg.checkpoint and torch.is_grad_enabled() and not eng.lean_chunk:
                # memory-lean without a chunked engine: keep only the layer's inputs and
                # recompute the rest in backward (the dense engine recomputes its edge
                # functions chunk by chunk instead: less memory, no second recomputation)
                h, e, eb = checkpoint(fn, eng_t, h, e, eb, use_reentrant=False)
            else:
                h, e, eb = fn(eng_t, h, e, eb)
            states.append((h, e, eb))
        out = (self._edit(batch, eng, h, e) if self.cfg.task == "equivariant"
               else self._readout(batch, eng, h))
        return (out, states) if return_states else out

    def _reads_io_only(self) -> bool:
        """Whether the output depends on the last layer's I/O node states only (then the last
        layer runs on an engine restricted ``toward`` them)."""
        return (self.cfg.task == "invariant" and self.cfg.readout == "last_layer"
                and self.cfg.prune_last_layer)

    def _layer_fn(self, t):
        """Layer ``t`` as called in ``forward``: with ``cfg.compile``, a ``torch.compile``d
        version that falls back to the eager layer (with a warning, for good) if compiling or
        running it raises."""
        layer = self.layers[t]
        if not self.cfg.compile or getattr(self, "_compile_failed", False):
            return layer
        cache = self.__dict__.setdefault("_compiled", {})   # not a submodule: no state_dict keys
        if t not in cache:
            try:
                cache[t] = torch.compile(layer, dynamic=False)
            except Exception as ex:   # noqa: BLE001 - any failure means: run eagerly
                return self._compile_fallback(ex, layer)
        compiled = cache[t]

        def run(*args):
            if getattr(self, "_compile_failed", False):
                return layer(*args)
            try:
                return compiled(*args)
            except Exception as ex:   # noqa: BLE001
                return self._compile_fallback(ex, layer)(*args)
        return run

    def _compile_fallback(self, ex, layer):
        import warnings
        warnings.warn(f"torch.compile failed ({type(ex).__name__}: {str(ex)[:200]}); running "
                      f"ScaleGMN eagerly", RuntimeWarning, stacklevel=3)
        self._compile_failed = True
        self.__dict__.pop("_compiled", None)
        return layer

    def _io_states(self, batch, h):
        bv = self._batch_vector(batch)
        B = len(self._archs(batch))
        d = h.shape[-1]
        u = []
        for role, n in (("input", self.info.n_in), ("output", self.info.n_out)):
            # row bv * n + io_index of a (B * n + 1, d) buffer; other nodes go to the last row
            sel = batch.role == ROLES.index(role)
            pos = torch.where(sel, bv * n + batch.io_index.clamp_min(0), B * n)
            buf = h.new_zeros(B * n + 1, d).index_add(0, pos, h)
            u.append(buf[:-1].reshape(B, n * d))
        return u, bv, B

    def _readout(self, batch, eng, h):
        (u_in, u_out), bv, B = self._io_states(batch, h)
        if self.cfg.readout == "last_layer":
            return self.head(torch.cat([u_out, u_in], dim=-1))
        r = self.read_mlp(eng.node_map(self.read_inv, h))
        hidden = (batch.role == ROLES.index("hidden")).to(r.dtype)[:, None]
        s = scatter(r * hidden, bv, dim=0, dim_size=B, reduce="sum")
        return self.head(torch.cat([s, u_in, u_out], dim=-1))

    def _edit(self, batch, eng, h, e):
        dtype = h.dtype
        dx = eng.node_map(self.node_head, h)
        dw = self.edge_head(eng, h, e)
        fm = torch.cat([feature_mask(a) for a in self._archs(batch)]).to(h.device, dtype)
        delta_x = h.new_zeros(batch.x.shape[0], batch.x.shape[1])
        cols = [c for c in self.neuron_cols if c < batch.x.shape[1]]
        delta_x[:, cols] = dx[:, :len(cols)] * fm[:, cols]
        fe = batch.edge_attr.shape[1]
        have, want = pad_shape(batch), tuple(self.info.kernel_shape)
        if have != want:
            slots = kernel_slots(have, want) if want else torch.zeros(1, dtype=torch.long)
            dw = dw[:, slots.to(dw.device)]
        editable = batch.edge_mask.to(dtype) * (batch.edge_type != _RESIDUAL).to(dtype)[:, None]
        delta_w = dw[:, :fe] * editable
        out = copy.copy(batch)
        out.x = batch.x.to(dtype) + self.beta[batch.layer][:, None] * delta_x
        out.edge_attr = (batch.edge_attr.to(dtype)
                         + self.alpha[batch.layer[batch.edge_index[1]]][:, None] * delta_w)
        out.delta_x, out.delta_edge_attr = delta_x, delta_w
        return out
