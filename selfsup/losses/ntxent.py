"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", 2020.

For 2B embeddings made of two views of B images, with z = normalise(embedding) and
sim(u, v) = u·v / τ, the loss of anchor i whose positive (other view) is j(i) is

    ℓ_i = -log  exp(sim(z_i, z_j(i))) / Σ_{k ≠ i} exp(sim(z_i, z_k))

and the loss is the mean of ℓ_i over all 2B anchors. With ``gather_distributed`` the
denominators run over the embeddings of every process (gathered with gradient), so P
processes with B images each give the loss of one process with P·B images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed


class NTXentLoss(nn.Module):
    """``NTXentLoss(temperature)(z1, z2)`` with z1, z2 of shape (B, D) -> scalar."""

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        if z1.shape != z2.shape or z1.ndim != 2:
            raise ValueError(
                f"expected two (B, D) tensors of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        b = z1.shape[0]
        z1 = F.normalize(z1.float(), dim=1)
        z2 = F.normalize(z2.float(), dim=1)
        if self.gather_distributed:
            all1, all2 = distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)
            offset = distributed.rank() * b
        else:
            all1, all2, offset = z1, z2, 0
        total = all1.shape[0]
        queries = torch.cat([z1, z2])  # (2B, D)
        keys = torch.cat([all1, all2])  # (2·P·B, D)
        logits = queries @ keys.T / self.temperature  # (2B, 2·P·B)
        local = torch.arange(b, device=z1.device) + offset
        self_index = torch.cat([local, local + total])  # where each query sits among the keys
        positive = torch.cat([local + total, local])  # its other view
        logits[torch.arange(2 * b, device=z1.device), self_index] = float("-inf")
        return F.cross_entropy(logits, positive)
