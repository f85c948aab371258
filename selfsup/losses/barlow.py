"""The Barlow Twins redundancy-reduction loss.

Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction." ICML 2021. arXiv:2103.03230.

Each embedding dimension is standardised over the batch, ẑ = (z − mean_b z) / sqrt(var_b z + ε)
(biased variance, as a BatchNorm without affine parameters computes it), and the
cross-correlation of the two views' standardised embeddings is

    C_ij = (1/N) Σ_b ẑ1_bi ẑ2_bj                      (D × D, N = batch size)

    L = Σ_i (1 − C_ii)²  +  λ Σ_i Σ_{j≠i} C_ij²

The first term makes the views agree (invariance), the second decorrelates the dimensions
(redundancy reduction). λ = 5e-3 at D = 8192 in the paper.

Distributed training: with ``gather_distributed`` the statistics and C are those of the
*global* batch: the embeddings of every process are gathered with gradient, so P processes
with B samples each compute exactly the loss of one process with P·B samples. Every process
then holds the same loss value; the gather's backward sums the P identical contributions and
DDP's gradient averaging divides them again, so the gradients are those of the single big
batch too. In one process the gather is the identity.
"""

from __future__ import annotations

from torch import Tensor, nn

from selfsup import distributed
from selfsup.losses.precision import float32_forward

EPS = 1e-5
"""ε of the standardisation: BatchNorm's default, as in the paper's ``bn(z)``."""


def standardize(z: Tensor, eps: float = EPS) -> Tensor:
    """(N, D) -> (N, D) with every column at mean 0 and (biased) variance 1."""
    centred = z - z.mean(dim=0)
    return centred / (centred.pow(2).mean(dim=0) + eps).sqrt()


class BarlowTwinsLoss(nn.Module):
    """``BarlowTwinsLoss(lambda_offdiag)(z1, z2)`` with z1, z2 of shape (B, D) -> scalar.

    Args:
        lambda_offdiag: λ, the weight of the off-diagonal (redundancy) term.
        scale: multiplies the whole loss. 1 is the paper's formula; the authors' first code
            release used 1/32 ≈ 0.024 at D 8192 and solo-learn uses 0.1 on CIFAR. With Adam(W)
            the scale hardly matters; with SGD/LARS it acts like the learning rate.
        gather_distributed: standardise and correlate over the global batch (all processes).
    """

    def __init__(
        self, lambda_offdiag: float = 5e-3, scale: float = 1.0, gather_distributed: bool = True
    ) -> None:
        super().__init__()
        if lambda_offdiag < 0:
            raise ValueError(f"lambda_offdiag must be 0 or more, got {lambda_offdiag}")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.lambda_offdiag = lambda_offdiag
        self.scale = scale
        self.gather_distributed = gather_distributed

    @float32_forward
    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        if z1.shape != z2.shape or z1.ndim != 2:
            raise ValueError(
                f"expected two (B, D) tensors of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        z1, z2 = z1.float(), z2.float()
        if self.gather_distributed:
            z1, z2 = distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)  # (N, D)
        n = z1.shape[0]
        if n < 2:
            raise ValueError("Barlow Twins needs at least 2 samples to standardise over a batch")
        c = standardize(z1).T @ standardize(z2) / n  # (D, D)
        diagonal = c.diagonal()
        on_diag = (1 - diagonal).pow(2).sum()
        off_diag = c.pow(2).sum() - diagonal.pow(2).sum()
        return self.scale * (on_diag + self.lambda_offdiag * off_diag)
