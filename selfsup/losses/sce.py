"""GraphMAE's scaled cosine error between reconstructed and original node features.

Hou et al., "GraphMAE: Self-Supervised Masked Graph Autoencoders", KDD 2022, arXiv:2205.10803
(equation 3).

For the reconstructions z (M, F) and the original features x (M, F) of the M masked nodes,

    SCE = mean_i (1 − x_i·z_i / (||x_i||·||z_i||))^γ,  γ ≥ 1

The power γ (the paper's scaling factor, 1-3; 3 on Cora) shrinks the loss of nodes that are
already reconstructed well (cosine near 1) faster than that of hard ones, like a focal loss.
A node whose features are all zero has no direction: it counts as cosine 0 (error 1), as in
the paper's code, which normalises with an epsilon.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.losses.precision import float32_forward


class ScaledCosineError(nn.Module):
    """``ScaledCosineError(gamma)(recon, target)``, both (M, F) -> scalar in [0, 2^γ]."""

    def __init__(self, gamma: float = 3.0) -> None:
        super().__init__()
        if gamma < 1:
            raise ValueError(f"the SCE power gamma must be at least 1, got {gamma}")
        self.gamma = gamma

    @float32_forward
    def forward(self, recon: Tensor, target: Tensor) -> Tensor:
        if recon.shape != target.shape or recon.ndim != 2:
            raise ValueError(
                f"expected two (M, F) tensors of equal shape, got {tuple(recon.shape)} and {tuple(target.shape)}"
            )
        cosine = (F.normalize(recon, dim=1) * F.normalize(target, dim=1)).sum(1)  # (M,)
        return distributed.global_mean((1 - cosine).pow(self.gamma))  # every process's rows
