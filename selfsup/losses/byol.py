"""BYOL's normalised mean squared error between online predictions and target projections.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020, arXiv:2006.07733 (equation 2).

For online predictions p (B, D) of one view and target projections z (B, D) of the other,

    ℓ(p, z) = mean_b || p_b/||p_b|| − z_b/||z_b|| ||² = mean_b (2 − 2·cos(p_b, z_b))

and the symmetrised loss is ℓ(p1, z2) + ℓ(p2, z1). The target branch must carry no
gradient: the caller computes z1, z2 under ``no_grad`` from the EMA target network. Every
term is per sample, so under DDP no gathering is needed.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class BYOLLoss(nn.Module):
    """``BYOLLoss()(p1, p2, z1, z2)``, each (B, D) -> scalar in [0, 8]."""

    @staticmethod
    def regression(p: Tensor, z: Tensor) -> Tensor:
        """mean_b (2 − 2·cos(p_b, z_b)) for p, z (B, D)."""
        if p.shape != z.shape or p.ndim != 2:
            raise ValueError(
                f"expected two (B, D) tensors of equal shape, got {tuple(p.shape)} and {tuple(z.shape)}"
            )
        return (2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=1)).mean()

    def forward(self, p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
        return self.regression(p1, z2) + self.regression(p2, z1)
