"""Exporters: write (edited) networks back in each public layout."""
from __future__ import annotations

import numpy as np

import converters

from .generate import atomic_save
from .zoo import state_dict_to_row


def siren_state_dict(graph, style: str) -> dict:
    """The SIREN of ``graph`` as a state dict in the ``dwsnets`` (``seq.{i}.*``) or ``nfn``
    (``net.{i}.linear.*``, last ``net.{L-1}.*``) key layout, whatever layout it came from."""
    sd = converters.to_state_dict(graph)
    weights = [k for k in sd if k.endswith("weight")]
    L = len(weights)
    out = {}
    for l, wk in enumerate(weights):
        bk = wk[:-len("weight")] + "bias"
        if style == "dwsnets":
            prefix = f"seq.{l}"
        elif style == "nfn":
            prefix = f"net.{l}" if l == L - 1 else f"net.{l}.linear"
        else:
            raise ValueError(f"style must be 'dwsnets' or 'nfn', got {style!r}")
        out[prefix + ".weight"] = sd[wk]
        out[prefix + ".bias"] = sd[bk]
    return out


def export_siren(graph, path, style: str, label=None):
    """Write one SIREN file in a public layout (with a ``label`` entry if given, as DWSNets'
    Fashion-MNIST INRs carry)."""
    sd = siren_state_dict(graph, style)
    if label is not None:
        sd["label"] = int(label)
    atomic_save(sd, path)


def zoo_rows(graphs) -> np.ndarray:
    """(n, 4970) TF-flat rows of Small-CNN-Zoo networks (for ``zoo.write_zoo``)."""
    return np.stack([state_dict_to_row(converters.to_state_dict(g)) for g in graphs])
