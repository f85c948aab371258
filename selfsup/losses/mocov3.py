"""MoCo v3's symmetrised contrastive loss with in-batch keys.

Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers",
ICCV 2021, arXiv:2104.02057 (Algorithm 1).

For queries q (B, D) from one view and keys k (B, D) of the other view from the momentum
encoder, all L2-normalised, and the keys of all P processes gathered into k_all (P·B, D),

    ctr(q, k) = 2τ · mean_b  -log  exp(q_b·k_b / τ) / Σ_j exp(q_b·k_all_j / τ)

(the 2τ factor of the paper's code makes the gradient scale independent of τ), and the
loss is ctr(q1, k2) + ctr(q2, k1). Keys carry no gradient (the caller computes them under
``no_grad``), so gathering them plainly is enough: P processes with B images each give the
loss of one process with P·B images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.losses.precision import float32_forward


class MoCoV3Loss(nn.Module):
    """``MoCoV3Loss(temperature)(q1, q2, k1, k2)``, each (B, D) -> scalar."""

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def contrast(self, q: Tensor, k: Tensor) -> Tensor:
        """2τ · cross-entropy of each query against all keys, its own key being the class."""
        if q.shape != k.shape or q.ndim != 2:
            raise ValueError(
                f"expected two (B, D) tensors of equal shape, got {tuple(q.shape)} and {tuple(k.shape)}"
            )
        q = F.normalize(q.float(), dim=1)
        k = F.normalize(k.float(), dim=1)
        offset = 0
        if self.gather_distributed:
            k = distributed.gather_with_grad(k)  # (P·B, D)
            offset = distributed.rank() * q.shape[0]
        logits = q @ k.T / self.temperature  # (B, P·B)
        target = torch.arange(q.shape[0], device=q.device) + offset
        return 2 * self.temperature * F.cross_entropy(logits, target)

    @float32_forward
    def forward(self, q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor) -> Tensor:
        return self.contrast(q1, k2) + self.contrast(q2, k1)
