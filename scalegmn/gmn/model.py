"""ScaleGMN, ScaleGMN-B and the permutation-only GMN: the parts assembled.

``InputEmbedding`` (embedding.py) -> ``layers`` x ``ScaleGMNLayer`` (layers.py, run by an engine
from plan.py) -> ``Readout`` or ``EditHead`` (readout.py). Symmetry: see layers.py and
docs/methods.md section 2.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from converters.graph import archs_of
from converters.groups import EDGE_TYPES, GROUPS

from ..config import ScaleGMNConfig
from ..spec import SpecInfo
from .embedding import InputEmbedding
from .engine import Engine
from .layers import ScaleGMNLayer
from .plan import engine_for, io_nodes
from .readout import EditHead, Readout

# state-dict keys of the single-class model (before the parts had their own modules)
_OLD_PREFIXES = {**{k: "embedding." + k for k in (
    "embed_x", "embed_inv", "embed_e", "embed_eb", "pe_in", "pe_out", "pe_layer", "pe_edge",
    "x_scale", "e_scale", "eb_scale")},
    **{k: "readout." + k for k in ("head", "read_inv", "read_mlp")},
    **{k: "edit." + k for k in ("node_head", "edge_head", "alpha", "beta")}}


class ScaleGMN(nn.Module):
    """ScaleGMN (``bidirectional=False``), ScaleGMN-B (``True``) and, with
    ``permutation_only``, the GMN ablation (every hidden neuron treated as ``perm``).

    ``forward(batch)``: invariant task -> (B, out_dim); equivariant task -> an edit
    (``scalegmn.edits.edit_output``: the input's structure, values ``W + alpha_l * delta`` and the
    raw ``delta_x`` / ``delta_edge_attr`` attached).
    """

    def __init__(self, cfg: ScaleGMNConfig, spec, bidirectional: bool = False,
                 permutation_only: bool = False):
        super().__init__()
        info = SpecInfo.of(spec)
        self.cfg, self.info = cfg, info
        self.bidir, self.perm_only = bidirectional, permutation_only
        groups = {"fixed", "perm"} if permutation_only else set(info.groups) | {"fixed"}
        if permutation_only and info.groups - {"fixed"}:
            groups.add("perm")
        self.groups = tuple(g for g in GROUPS if g in groups)
        self.embedding = InputEmbedding(cfg, info, bidirectional, permutation_only, spec)
        equivariant = cfg.task == "equivariant"
        self.pairs = (cfg.pair_messages and (info.inverse_pairs or info.attention_heads)
                      and not permutation_only)
        self.layers = nn.ModuleList([
            ScaleGMNLayer(self.groups, cfg, bidirectional,
                          update_edges=equivariant or t < cfg.layers - 1 or cfg.layers == 1,
                          pairs=self.pairs)
            for t in range(cfg.layers)])
        if equivariant:
            self.edit = EditHead(self.groups, cfg, info, len(self.embedding.neuron_cols))
        else:
            self.readout = Readout(self.groups, cfg, info)
        from ..published_style import apply as apply_style
        apply_style(self, cfg)      # the published model's choices, where cfg asks for them
        if equivariant and cfg.data_scale and hasattr(spec, "edge_attr"):
            self._edit_units_from(spec)
        self._register_load_state_dict_pre_hook(self._rename_old_keys)

    @torch.no_grad()
    def _edit_units_from(self, batch) -> None:
        """The edit head's units from the raw edit of the example ``batch`` at initialisation
        (``EditHead.unit_from``; the model's mode and RNG state are left as they were)."""
        training, rng = self.training, torch.get_rng_state()
        dtype = next(self.parameters()).dtype
        example = batch.clone()
        example.x, example.edge_attr = example.x.to(dtype), example.edge_attr.to(dtype)
        try:
            self.eval()
            self.edit.unit_from(example, self(example))
        finally:
            self.train(training)
            torch.set_rng_state(rng)

    @staticmethod
    def _rename_old_keys(state_dict, prefix, *args):
        """Checkpoints of the single-class model load into this one."""
        for key in list(state_dict):
            if not key.startswith(prefix):
                continue
            head, _, rest = key[len(prefix):].partition(".")
            if head in _OLD_PREFIXES:
                new = prefix + _OLD_PREFIXES[head] + ("." + rest if rest else "")
                state_dict[new] = state_dict.pop(key)

    # -- what the model claims and how it runs -------------------------------------------------
    def claimed_groups(self) -> tuple:
        """The symmetry groups (docs/design.md vocabulary) this model is equivariant or
        invariant to."""
        return ("fixed", "perm") if self.perm_only else GROUPS

    def set_engine(self, kind: str) -> "ScaleGMN":
        """Run on the ``auto``, ``sparse`` or ``dense`` engine from now on (same function)."""
        return self.set_execution(engine=kind)

    def set_execution(self, **options) -> "ScaleGMN":
        """Change execution options (``ExecutionConfig`` fields: ``engine``, ``checkpoint``,
        ``checkpoint_chunk``, ``compile``, ``prune_last_layer``) from now on; the function
        computed stays the same. ``fused`` is fixed when the model is built."""
        allowed = {"engine", "checkpoint", "checkpoint_chunk", "compile", "prune_last_layer"}
        bad = sorted(set(options) - allowed)
        if bad:
            raise ValueError(f"set_execution: {bad} cannot change after construction "
                             f"(choose among {sorted(allowed)}; build with fused=... instead)")
        self.cfg = self.cfg.replace(**options)
        return self

    def engine(self, batch) -> Engine:
        """The engine for ``batch`` (cached per architecture tuple and device)."""
        ex = self.cfg.execution
        return engine_for(archs_of(batch), ex.engine, self.perm_only,
                          batch.edge_index.device, ex.checkpoint, ex.checkpoint_chunk)

    def _check(self, batch) -> None:
        """The batch fits the sizes the model was built for (read from its architectures, on
        the host: no device synchronisation)."""
        seen = SpecInfo.of(archs_of(batch))
        if seen.n_edge_types > self.info.n_edge_types:
            raise ValueError(f"batch has edges of type '{EDGE_TYPES[seen.n_edge_types - 1]}'; "
                             f"the model was built for the types "
                             f"{list(EDGE_TYPES[:self.info.n_edge_types])} (build it from a "
                             f"spec holding such a network)")
        if ((seen.inverse_pairs or seen.attention_heads) and not self.pairs
                and self.cfg.pair_messages and not self.perm_only):
            raise ValueError("batch has networks with attention heads or inverse pairs (queries "
                             "and keys) but the model was built without pair messages (build it "
                             "from a spec holding such a network, or set pair_messages=False to "
                             "read them blind to Q/K rescalings)")
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

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, batch, return_states: bool = False):
        """Invariant: (B, out_dim); equivariant: an edit. ``return_states``: also the list of
        ``(h, e, eb)`` after the embedding and after every layer."""
        self._check(batch)
        eng = self.engine(batch)
        h, e, eb = self.embedding(batch)
        states = [(h, e, eb)]
        for t in range(len(self.layers)):
            eng_t = eng
            if t == len(self.layers) - 1 and not return_states and self._reads_io_only():
                # the readout reads only I/O nodes: the last layer's messages into other
                # nodes are dead code (same output; about a fifth of the step's FLOPs)
                eng_t = eng.toward(io_nodes(archs_of(batch)))
            h, e, eb = eng_t.run_layer(self._layer_fn(t), h, e, eb)
            states.append((h, e, eb))
        out = (self.edit(batch, eng, h, e, self.embedding.neuron_cols)
               if self.cfg.task == "equivariant" else self.readout(batch, eng, h))
        return (out, states) if return_states else out

    def _reads_io_only(self) -> bool:
        """Whether the output depends on the last layer's I/O node states only (then the last
        layer runs on an engine restricted ``toward`` them)."""
        return (self.cfg.task == "invariant" and self.readout.reads_io_only
                and self.cfg.execution.prune_last_layer)

    def _layer_fn(self, t):
        """Layer ``t`` as called in ``forward``: with ``execution.compile``, a ``torch.compile``d
        version that falls back to the eager layer (with a warning, for good) if compiling or
        running it raises."""
        layer = self.layers[t]
        if not self.cfg.execution.compile or getattr(self, "_compile_failed", False):
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
        warnings.warn(f"torch.compile failed ({type(ex).__name__}: {str(ex)[:200]}); running "
                      f"ScaleGMN eagerly", RuntimeWarning, stacklevel=3)
        self._compile_failed = True
        self.__dict__.pop("_compiled", None)
        return layer
