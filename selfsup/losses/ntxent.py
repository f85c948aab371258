"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", 2020.

For 2B embeddings made of two views of B images, with z = normalise(embedding) and
sim(u, v) = u·v / τ, the loss of anchor i whose positive (other view) is j(i) is

    ℓ_i = -log  exp(sim(z_i, z_j(i))) / Σ_{k ≠ i} exp(sim(z_i, z_k))

and the loss is the mean of ℓ_i over all 2B anchors. With ``gather_distributed`` the
denominators run over the embeddings of every process (gathered with gradient), so P
processes with B images each give the loss of one process with P·B images.

Memory: the logits of all anchors against all keys are (2B, 2·P·B), 268 MB in float32 for
B = 4,096, and the plain autograd graph keeps about three such matrices. Above
``block_elements`` logits the loss runs over blocks of anchors instead, each block under
activation checkpointing (``torch.utils.checkpoint``): only one block's logits exist at a
time, in the forward pass and again, recomputed, in the backward pass. The value and the
gradients are the same (to float rounding); the price is one more (2B × 2PB × D) matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from selfsup import distributed
from selfsup.losses.precision import float32_forward

BLOCK_ELEMENTS = 2**22
"""Largest logits matrix (anchors × keys) built at once: 16 MB in float32."""


def _block_loss_sum(
    queries: Tensor, keys: Tensor, self_index: Tensor, positive: Tensor, temperature: float
) -> Tensor:
    """Σ over the anchors ``queries`` (b, D) of -log softmax(q·keys/τ without self)[positive]."""
    logits = queries @ keys.T / temperature  # (b, K)
    rows = torch.arange(queries.shape[0], device=queries.device)
    logits = logits.index_put((rows, self_index), logits.new_tensor(float("-inf")))
    return F.cross_entropy(logits, positive, reduction="sum")


class NTXentLoss(nn.Module):
    """``NTXentLoss(temperature)(z1, z2)`` with z1, z2 of shape (B, D) -> scalar."""

    def __init__(
        self,
        temperature: float = 0.2,
        gather_distributed: bool = True,
        block_elements: int = BLOCK_ELEMENTS,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if block_elements < 1:
            raise ValueError(f"block_elements must be ≥ 1, got {block_elements}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed
        self.block_elements = block_elements

    @float32_forward
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
        local = torch.arange(b, device=z1.device) + offset
        self_index = torch.cat([local, local + total])  # where each query sits among the keys
        positive = torch.cat([local + total, local])  # its other view
        n, k = queries.shape[0], keys.shape[0]
        if n * k <= self.block_elements:
            return _block_loss_sum(queries, keys, self_index, positive, self.temperature) / n
        rows = max(1, self.block_elements // k)
        total_loss = queries.new_zeros(())
        for start in range(0, n, rows):
            block = slice(start, min(n, start + rows))
            total_loss = total_loss + checkpoint(
                _block_loss_sum,
                queries[block],
                keys,
                self_index[block],
                positive[block],
                self.temperature,
                use_reentrant=False,
            )
        return total_loss / n
