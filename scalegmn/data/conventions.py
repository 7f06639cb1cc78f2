"""SIREN conventions of the public INR data sets, carried as data (docs/design.md 8).

The DWSNets and NFN SIRENs differ in state-dict keys, output offset, target range and coordinate
order. A loader attaches its ``SirenConvention`` to every graph (``graph.convention``) and to the
``ArchSpec`` meta; renderers read it from there, never from a hard-coded model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

import converters


@dataclass(frozen=True)
class SirenConvention:
    """style: ``dwsnets`` (keys ``seq.*``, output ``+0.5``, targets in [0, 1], coordinates
    ``(x = column, y = row)``) or ``nfn`` (keys ``net.*``, no offset, targets in [-1, 1],
    coordinates ``(row, column)``); both ``sin(w0 (W x + b))`` with ``w0 = 30``."""

    style: str = "dwsnets"
    w0: float = 30.0
    output_offset: float = 0.5
    target_range: tuple = (0.0, 1.0)
    coords: str = "xy"        # "xy": (column, row); "ij": (row, column)

    def arch(self, widths=(2, 32, 32, 1)) -> converters.ArchSpec:
        spec = converters.arch.siren(widths=tuple(widths), w0=self.w0,
                                     output_offset=self.output_offset, style=self.style)
        return spec.with_meta(convention=self.to_dict())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_range"] = list(self.target_range)
        return d

    @classmethod
    def from_dict(cls, d) -> "SirenConvention":
        d = dict(d)
        d["target_range"] = tuple(d["target_range"])
        return cls(**d)


DWSNETS = SirenConvention("dwsnets", 30.0, 0.5, (0.0, 1.0), "xy")
NFN = SirenConvention("nfn", 30.0, 0.0, (-1.0, 1.0), "ij")


def coordinates(height: int, width: int, convention: SirenConvention,
                dtype=torch.float32) -> torch.Tensor:
    """(H * W, 2) input coordinates in [-1, 1]^2, row-major pixels, in the convention's order."""
    ys = torch.linspace(-1, 1, height, dtype=dtype)
    xs = torch.linspace(-1, 1, width, dtype=dtype)
    rr, cc = torch.meshgrid(ys, xs, indexing="ij")
    if convention.coords == "xy":
        return torch.stack([cc.reshape(-1), rr.reshape(-1)], dim=1)
    return torch.stack([rr.reshape(-1), cc.reshape(-1)], dim=1)


def to_target_range(images: torch.Tensor, convention: SirenConvention) -> torch.Tensor:
    """Images in [0, 1] -> the convention's target range."""
    lo, hi = convention.target_range
    return images * (hi - lo) + lo


def render(graphs, convention: SirenConvention, height: int, width: int) -> torch.Tensor:
    """Images (B, C, H, W) in the convention's target range drawn by a batch of SIRENs (the
    output offset is part of the network)."""
    from torch_geometric.data import Batch
    batch = graphs if isinstance(graphs, Batch) else Batch.from_data_list(list(graphs))
    dense = converters.to_dense(batch)
    xy = coordinates(height, width, convention, dense.b[0].dtype)
    out = converters.functional_forward(dense, xy)        # (B, H*W, C)
    B, _, C = out.shape
    return out.transpose(1, 2).reshape(B, C, height, width)
