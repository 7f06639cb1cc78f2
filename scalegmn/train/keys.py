"""What every run-configuration key means: ``scalegmn train --config NAME --show`` and
``--config list``.

``KEY_HELP`` has one entry per field of ``RunConfig`` and its sections (``DataConfig``, every
``ModelConfig`` family, ``TrainConfig``); a test keeps the two in step. Nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

from ..config import MODEL_FAMILIES, ModelConfig
from .config import CONFIG_DIR, RunConfig, list_configs

KEY_HELP = {
    "task": "inr_classification (class of the fitted image), generalization (a CNN's test "
            "accuracy) or inr_editing (edit the INR toward a transformed image)",
    # data
    "data.format": "data set layout: dwsnets-mnist, dwsnets-fmnist, nfn-siren, cnn-zoo, folder",
    "data.path": "folder holding the data set; null: the built-in set of the format, made on "
                 "first use in ~/.cache/scalegmn (dwsnets-mnist, cnn-zoo)",
    "data.options": "extra keyword arguments of the format's loader (scalegmn.data.load_dataset)",
    "data.batch_size": "networks per training and evaluation batch",
    "data.augment": "train on copies transformed by random group actions (permutations, sign "
                    "flips, scalings)",
    "data.limit": "use at most this many networks per split (null: all)",
    "data.default_size": "networks in the built-in data set (made on first use if absent)",
    "data.editing": "inr_editing target: dilate or contrast",
    # model
    "model.backend": "metanetwork: scalegmn, scalegmn-b, gmn, monomial-nfn, magep-nfn, np, hnp, "
                     "statnn or mlp",
    "model.task": "invariant (one output vector per network) or equivariant (an edited network)",
    "model.out_dim": "output size of the invariant head (null: set from the data)",
    "model.hidden": "hidden channels of node and edge states",
    "model.layers": "message-passing (or equivariant) layers",
    "model.dropout": "dropout rate in the readout and head MLPs",
    "model.residual": "residual connections around each layer",
    "model.layer_norm": "layer normalisation inside the MLPs",
    "model.readout": "full_graph (pooled invariants of hidden nodes + I/O states) or last_layer "
                     "(input and output neuron states only)",
    "model.sign_inv": "sign-invariant map: symmetrize, canonicalize or abs",
    "model.scale_inv": "scale-invariant map: normalize (none: a broken variant for controls)",
    "model.backward_edges": "ScaleGMN-B backward messages: reciprocal (1/W), division_free, or "
                            "forward (the published bug, for negative controls only)",
    "model.reciprocal_on_sign": "ScaleGMN-B: also use 1/W on edges whose endpoints only flip "
                                "signs",
    "model.pair_messages": "ScaleGMN: a message between each attention query dimension and its "
                           "key dimension (reciprocal factors), on graphs that have such pairs",
    "model.io_embeddings": "learned embeddings of input and output neurons",
    "model.layer_embeddings": "learned per-layer embeddings",
    "model.edge_type_embeddings": "learned embeddings of edge types (weight, residual, norm)",
    "model.input_norm": "normalise inputs (null: on for gmn, off otherwise)",
    "model.edit_init": "equivariant task: initial scale of the predicted edit",
    "model.data_scale": "per-layer input scales (and, editing, per-layer edit units) from "
                        "the example batch's magnitudes",
    "model.layer_scales": "learn the per-node-set input scales (false: frozen at their initial "
                          "value, as the published ScaleGMN has none to learn)",
    "model.init": "near_identity (gates near 1, norm-preserving maps) or torch_default "
                  "(PyTorch's initialisation, as the published ScaleGMN)",
    "model.backward_edge_updates": "ScaleGMN-B: every_group, or scale_only (backward edges "
                                   "updated only for ReLU-like networks, as published)",
    "model.engine": "message passing: auto (dense for one architecture), sparse or dense",
    "model.channels": "parameter-sharing backends: channels of each layer (null: hidden x "
                      "layers)",
    "model.head_hidden": "parameter-sharing backends: width of the invariant head (null: hidden)",
    "model.io_embed": "NP: learned input/output embeddings",
    "model.input_features": "NP/HNP: raw (each weight as one channel) or fourier (fixed Gaussian "
                            "Fourier features of each weight)",
    "model.fourier_features": "NP/HNP with input_features fourier: m, the projections (2m "
                              "channels)",
    "model.fourier_scale": "NP/HNP with input_features fourier: standard deviation of the "
                           "projections (3 for MNIST INRs, 10 for Fashion-MNIST)",
    "model.checkpoint": "memory-lean mode: recompute each layer in the backward pass (slower)",
    "model.checkpoint_chunk": "memory-lean mode with the dense engine: networks per chunk",
    "model.compile": "torch.compile the message-passing layers (eager if that fails)",
    "model.prune_last_layer": "readout last_layer: skip last-layer messages it never reads "
                              "(same outputs)",
    "model.fused": "ScaleEq's fused evaluation (false: the textbook one, slower; same function)",
    # train
    "train.epochs": "passes over the training split",
    "train.lr": "AdamW learning rate",
    "train.weight_decay": "AdamW weight decay",
    "train.clip": "gradient-norm clipping threshold",
    "train.warmup_steps": "steps of linear learning-rate warm-up",
    "train.seed": "seed of initialisation, data order and augmentation",
    "train.device": "torch device: cpu, cuda, cuda:1, ...",
    "train.dtype": "float32 or float64",
    "train.eval_every": "validate every this many epochs (and after the last)",
    "train.progress": "progress bars with rate and ETA on stderr",
    "train.threads": "torch intra-op threads (null: torch's default)",
    "train.deterministic": "one thread and deterministic kernels: bitwise-repeatable runs",
    "train.malloc": "memory allocator policy: auto (lean with model.checkpoint, else keep), "
                    "keep (fast), lean or default",
}


def config_keys(cls=RunConfig, prefix: str = "", model: ModelConfig | None = None) -> dict:
    """``{dotted key: default}`` for every leaf field of ``cls`` (sections flattened). The
    ``model`` section lists the keys of ``model``'s family (``scalegmn.config``), or of every
    family when ``model`` is None."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if tp is ModelConfig:
            families = [type(model)] if model is not None else MODEL_FAMILIES
            for fam in families:
                for k, v in fam().to_dict().items():
                    out.setdefault(f"{prefix}{f.name}.{k}", v)
        elif dataclasses.is_dataclass(tp):
            out.update(config_keys(tp, f"{prefix}{f.name}."))
        elif f.default is not dataclasses.MISSING:
            out[prefix + f.name] = f.default
        else:
            out[prefix + f.name] = f.default_factory()
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and f"{prefix}{k}" in ("data", "model", "train"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _fmt(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def show(cfg: RunConfig, name: str = "") -> str:
    """Every key of ``cfg``: its value here, its default and its meaning (one line each)."""
    defaults = config_keys(model=cfg.model)
    values = _flatten(cfg.to_dict())
    kw = max(len(k) for k in defaults) + 2
    vw = min(20, max(len(_fmt(values[k])) for k in defaults)) + 2
    dw = min(20, max(len(_fmt(d)) for d in defaults.values())) + 2
    lines = [f"config {name}: {description(name)}" if name else "config",
             f"{'key':<{kw}}{'value':<{vw}}{'default':<{dw}}meaning"]
    for k, default in defaults.items():
        lines.append(f"{k:<{kw}}{_fmt(values[k]):<{vw}}{_fmt(default):<{dw}}{KEY_HELP[k]}")
    lines.append("override any key with --set KEY=VALUE (e.g. --set train.epochs=3)")
    return "\n".join(lines)


def description(name: str, limit: int = 100) -> str:
    """The first sentence of a shipped config's leading comment (one line)."""
    path = Path(name) if Path(name).is_file() else CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        return ""
    comment = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    text = " ".join(comment)
    depth = 0
    for i, ch in enumerate(text):       # cut at the first '.' or ';' outside parentheses
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and ch in ".;" and (i + 1 == len(text) or text[i + 1] == " "):
            text = text[:i]
            break
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def list_lines() -> list:
    """One line per shipped config: its name and a one-line description."""
    names = list_configs()
    width = max(len(n) for n in names) + 2
    return [f"{n:<{width}}{description(n)}" for n in names]
