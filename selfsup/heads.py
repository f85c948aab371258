"""Projection and prediction heads: MLPs between the encoder and the loss."""

from __future__ import annotations

from typing import Literal

from torch import nn


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    *,
    layers: int = 2,
    norm: Literal["batch", "layer", "none"] = "batch",
    last_norm: bool = False,
) -> nn.Sequential:
    """Linear -> norm -> ReLU, ``layers - 1`` times, then Linear (and an affine-free norm if
    ``last_norm``, as in SimCLR v2 / BYOL / Barlow Twins variants)."""
    if layers < 1:
        raise ValueError("an MLP head needs at least one layer")
    if min(in_dim, hidden_dim, out_dim) < 1:
        raise ValueError(
            f"an MLP head needs positive widths, got in {in_dim}, hidden {hidden_dim}, out {out_dim}"
        )

    def make_norm(dim: int, affine: bool = True) -> nn.Module:
        if norm == "batch":
            return nn.BatchNorm1d(dim, affine=affine)
        if norm == "layer":
            return nn.LayerNorm(dim, elementwise_affine=affine)
        return nn.Identity()

    blocks: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        blocks += [
            nn.Linear(dim, hidden_dim, bias=norm == "none"),
            make_norm(hidden_dim),
            nn.ReLU(inplace=True),
        ]
        dim = hidden_dim
    blocks.append(nn.Linear(dim, out_dim))
    if last_norm:
        blocks.append(make_norm(out_dim, affine=False))
    return nn.Sequential(*blocks)
