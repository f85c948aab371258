"""SigLIP's pairwise sigmoid loss, and its chunked distributed form.

Zhai, Mustafa, Kolesnikov, Beyer. "Sigmoid Loss for Language Image Pre-Training", ICCV 2023
(arXiv:2303.15343).

For B pairs with L2-normalised image embeddings x_i and text embeddings y_j (B, D), a
learnable temperature t = exp(t') (t' initialised at log 10) and bias b (initialised at -10):

    ℓ = -1/B Σ_i Σ_j log σ( z_ij (t x_i·y_j + b) ),   z_ij = 1 if i = j else -1

Every pair is a binary problem of its own, so no row needs the whole batch to normalise.
Distributed, as the paper's chunked implementation: each process scores its B images
against its own B texts, then passes its texts to the next process in a ring and receives
the previous one's, P - 1 times, scoring all-negative blocks. No process ever holds more than
one (B, B) block or the features of more than two processes. The pass keeps the gradient
(the backward sends the text gradients back around the ring), so the mean of the processes'
losses and its gradients equal one process holding all P·B pairs.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.losses.clip import check_pairs
from selfsup.losses.precision import float32_forward


class _RingPass(torch.autograd.Function):
    """Forward: send ``x`` to rank + 1 and return what rank - 1 sent. Backward: the gradient
    goes the opposite way (to rank - 1, from rank + 1)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return _exchange(x.contiguous(), step=1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return _exchange(grad.contiguous(), step=-1)


def _exchange(x: Tensor, step: int) -> Tensor:
    """Send ``x`` to rank + step and receive the same shape from rank - step."""
    world, rank = distributed.world_size(), distributed.rank()
    received = torch.empty_like(x)
    ops = [
        dist.P2POp(dist.isend, x, (rank + step) % world),
        dist.P2POp(dist.irecv, received, (rank - step) % world),
    ]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


def ring_pass(x: Tensor) -> Tensor:
    """``x`` of the previous process in the ring (rank - 1), with gradient; identity alone."""
    if not distributed.is_distributed():
        return x
    return _RingPass.apply(x)  # type: ignore[no-any-return]


def sigmoid_block_loss(x: Tensor, y: Tensor, t: Tensor, b: Tensor, positives: bool) -> Tensor:
    """Σ_ij -log σ(z_ij (t x_i·y_j + b)) over one (B, B) block; z = 2I - 1 on the block of a
    process's own pairs, -1 everywhere on a block of another process's texts."""
    logits = t * x @ y.T + b  # (B, B)
    signs = -torch.ones_like(logits)
    if positives:
        signs = signs + 2 * torch.eye(logits.shape[0], device=logits.device, dtype=logits.dtype)
    return -F.logsigmoid(signs * logits).sum()


class SigLIPLoss(nn.Module):
    """``SigLIPLoss()(x, y)`` with image and text embeddings (B, D) -> scalar.

    Holds the learnable t' (``log_temperature``) and b (``bias``).
    """

    def __init__(
        self,
        init_log_temperature: float = math.log(10),
        init_bias: float = -10.0,
        gather: bool = True,
    ) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(float(init_log_temperature)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))
        self.gather = gather

    def scale(self) -> Tensor:
        """The temperature t = exp(t') that multiplies the cosine similarities."""
        return self.log_temperature.exp()

    @float32_forward
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        check_pairs(x, y)
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
        t = self.scale()
        total = sigmoid_block_loss(x, y, t, self.bias, positives=True)
        if self.gather:
            others = y
            for _ in range(distributed.world_size() - 1):
                others = ring_pass(others)  # the texts of rank - 1, rank - 2, ...
                total = total + sigmoid_block_loss(x, others, t, self.bias, positives=False)
        return total / x.shape[0]
