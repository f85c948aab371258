"""TS2Vec's hierarchical contrastive loss (Yue et al., AAAI 2022, arXiv:2106.10466, Alg. 1).

Two views z1, z2 (B, T, D) hold the features of the same time steps of the same series (the
overlap of two random crops). At each scale s of a max-pooling pyramid (kernel 2 over time,
until one step is left) two InfoNCE terms are added, on raw dot products (no temperature,
no normalisation, as in the paper's code):

- instance-wise: at each step t, r1[i, t] must pick r2[i, t] among the 2B - 1 other vectors of
  that step, the other series of the batch (both views) being the negatives;
  l_inst = -log exp(r1[i,t]·r2[i,t]) / sum_{j} (exp(r1[i,t]·r2[j,t]) + 1[i≠j] exp(r1[i,t]·r1[j,t]))
  averaged over i, t and both directions.
- temporal: within series i, r1[i, t] must pick r2[i, t] among the 2T - 1 other steps of both
  views; same form with the steps as negatives.

    L = (1 / S) · sum_s [alpha · l_inst(s) + (1 - alpha) · l_temp(s)]

The temporal term starts at level ``temporal_unit`` (0: every level) and is absent at the last
level (one step has no other steps); S counts the levels including that last one.

The negatives are the local batch's: TS2Vec trains at batch 8 on one device, and under DDP
each process contrasts its own batch (nothing is gathered).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import SelfsupError


def _pick_the_twin(z: Tensor) -> Tensor:
    """z (G, 2M, D): in every group, the mean over the 2M vectors of -log softmax of their dot
    products with the 2M - 1 others, at the twin (m paired with m + M)."""
    M = z.shape[1] // 2
    sim = z @ z.transpose(1, 2)  # (G, 2M, 2M)
    eye = torch.eye(2 * M, dtype=torch.bool, device=z.device)
    logits = sim.masked_fill(eye, float("-inf"))  # a vector is not its own negative
    log_prob = F.log_softmax(logits.float(), dim=-1)
    twin = torch.arange(2 * M, device=z.device).roll(M)  # (2M,)
    return -log_prob.gather(2, twin.expand(z.shape[0], -1)[..., None]).mean()


def instance_contrastive(z1: Tensor, z2: Tensor) -> Tensor:
    """Instance-wise term: at each step, the same series' other view against the batch."""
    if z1.shape[0] == 1:
        return z1.new_zeros(())
    return _pick_the_twin(torch.cat([z1, z2], dim=0).transpose(0, 1))  # (T, 2B, D)


def temporal_contrastive(z1: Tensor, z2: Tensor) -> Tensor:
    """Temporal term: within a series, the same step's other view against the other steps."""
    if z1.shape[1] == 1:
        return z1.new_zeros(())
    return _pick_the_twin(torch.cat([z1, z2], dim=1))  # (B, 2T, D)


class HierarchicalContrastiveLoss(nn.Module):
    """TS2Vec's loss over a max-pooling pyramid (module docstring).

    Args:
        alpha: weight of the instance-wise term (1 - alpha for the temporal one); 0.5.
        temporal_unit: the first pyramid level with a temporal term; 0 (raise it to save
            time on very long series).
    """

    def __init__(self, alpha: float = 0.5, temporal_unit: int = 0) -> None:
        super().__init__()
        if not 0 <= alpha <= 1:
            raise SelfsupError(f"alpha must lie in [0, 1], got {alpha}")
        if temporal_unit < 0:
            raise SelfsupError(f"temporal_unit must be 0 or more, got {temporal_unit}")
        self.alpha = alpha
        self.temporal_unit = temporal_unit

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """z1, z2 (B, T, D) -> scalar."""
        if z1.shape != z2.shape or z1.ndim != 3:
            raise SelfsupError(
                f"views must both be (B, T, D), got {tuple(z1.shape)}, {tuple(z2.shape)}"
            )
        loss = z1.new_zeros((), dtype=torch.float32)
        levels = 0
        while True:
            if self.alpha > 0:
                loss = loss + self.alpha * instance_contrastive(z1, z2)
            if z1.shape[1] == 1:
                levels += 1
                break
            if levels >= self.temporal_unit and self.alpha < 1:
                loss = loss + (1 - self.alpha) * temporal_contrastive(z1, z2)
            levels += 1
            z1 = F.max_pool1d(z1.transpose(1, 2), kernel_size=2).transpose(1, 2)
            z2 = F.max_pool1d(z2.transpose(1, 2), kernel_size=2).transpose(1, 2)
        return loss / levels
