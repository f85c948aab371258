"""SimSiam's symmetrised negative cosine similarity.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021,
arXiv:2011.10566 (equations 1-4).

For predictions p (B, D) of one view and projections z (B, D) of the other,

    D(p, z) = −mean_b  p_b·z_b / (||p_b||·||z_b||)
    L = ½·D(p1, stopgrad(z2)) + ½·D(p2, stopgrad(z1))

which lies in [−1, 1]. The stop-gradient is the caller's: this module does not detach ``z``,
so a method can switch it off to show the collapse the paper describes. Every term is per
sample, so under DDP no gathering is needed.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SimSiamLoss(nn.Module):
    """``SimSiamLoss()(p1, p2, z1, z2)``, each (B, D) -> scalar in [−1, 1]."""

    @staticmethod
    def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
        """−mean_b cos(p_b, z_b) for p, z (B, D)."""
        if p.shape != z.shape or p.ndim != 2:
            raise ValueError(
                f"expected two (B, D) tensors of equal shape, got {tuple(p.shape)} and {tuple(z.shape)}"
            )
        return -F.cosine_similarity(p.float(), z.float(), dim=1).mean()

    def forward(self, p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
        return 0.5 * self.negative_cosine(p1, z2) + 0.5 * self.negative_cosine(p2, z1)
