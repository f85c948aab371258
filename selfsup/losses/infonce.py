"""InfoNCE against a queue of negatives, and the queue itself (MoCo v1/v2).

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020
(arXiv:1911.05722); Chen et al., "Improved Baselines with Momentum Contrastive Learning",
2020 (arXiv:2003.04297).

For B queries q (B, D), their positive keys k (B, D) from the momentum encoder and K
negative keys n (K, D) from the queue, all L2-normalised,

    ℓ_b = -log  exp(q_b·k_b / τ) / ( exp(q_b·k_b / τ) + Σ_j exp(q_b·n_j / τ) )

and the loss is the mean of ℓ_b over the batch: a (1 + K)-way cross-entropy whose class 0
is the positive. Every term is per query, so under DDP the mean over one process's queries,
averaged by DDP over processes, is the loss of one process with the whole batch, provided
every process holds the same queue; ``KeyQueue.push`` gathers the keys of all processes to
keep it so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.losses.precision import float32_forward


class InfoNCELoss(nn.Module):
    """``InfoNCELoss(temperature)(q, k, negatives)``: q, k (B, D), negatives (K, D) -> scalar.

    All three are L2-normalised here. Gradients flow into ``q`` (and ``k``, if it has any);
    pass ``negatives`` as a copy of the queue, never the buffer that is updated after the step.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    @float32_forward
    def forward(self, q: Tensor, k: Tensor, negatives: Tensor) -> Tensor:
        if q.shape != k.shape or q.ndim != 2 or negatives.ndim != 2:
            raise ValueError(
                f"expected q, k of equal shape (B, D) and negatives (K, D), got "
                f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(negatives.shape)}"
            )
        if negatives.shape[1] != q.shape[1]:
            raise ValueError(f"negatives have width {negatives.shape[1]}, queries {q.shape[1]}")
        q = F.normalize(q.float(), dim=1)
        k = F.normalize(k.float(), dim=1)
        n = F.normalize(negatives.float(), dim=1)
        positive = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
        negative = q @ n.T  # (B, K)
        logits = torch.cat([positive, negative], dim=1) / self.temperature  # (B, 1 + K)
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target)


class KeyQueue(nn.Module):
    """A first-in first-out queue of K keys of width D, in registered buffers so that
    checkpoints and resume restore it.

    ``keys`` (K, D) starts as random unit vectors (as in MoCo); ``ptr`` is the row where the
    next key goes. ``push(k)`` gathers k (B, D) from every process (rank order, so all
    processes write the same rows) and overwrites the oldest P·B rows, wrapping round.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and width must be positive, got {size} and {dim}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def push(self, k: Tensor) -> None:
        k = distributed.gather_with_grad(k.detach())  # (P·B, D), same order on every process
        k = F.normalize(k.to(self.keys.dtype), dim=1)[-self.size :]  # more than K: keep newest
        rows = (self.ptr + torch.arange(k.shape[0], device=k.device)) % self.size
        self.keys[rows] = k
        self.ptr.copy_((self.ptr + k.shape[0]) % self.size)
