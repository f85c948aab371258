"""The VICReg loss: variance, invariance and covariance regularisation.

Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning." ICLR 2022. arXiv:2105.04906.

For the two views' embeddings Z, Z' of shape (N, D):

    s(Z, Z') = (1/(N·D)) Σ_b Σ_j (z_bj − z'_bj)²                       invariance (MSE)
    v(Z)     = (1/D) Σ_j max(0, γ − sqrt(Var_b(z_j) + ε))             variance hinge on the std
    c(Z)     = (1/D) Σ_i Σ_{j≠i} Cov(Z)_ij²,   Cov(Z) = (1/(N−1)) Σ_b (z_b − z̄)(z_b − z̄)ᵀ

    L = λ s(Z, Z') + μ (v(Z) + v(Z'))/2 + ν (c(Z) + c(Z'))

with λ = μ = 25, ν = 1, γ = 1, ε = 1e-4 (Var unbiased). The variance term is averaged over
the two branches and the covariance term summed, as in the authors' released code, which
produced the paper's numbers with these coefficients (the paper's eq. 6 writes μ(v + v')).

Distributed training: the invariance term is per sample, so each process takes the mean over
its own samples and DDP's averaging makes it the global mean. With ``gather_distributed`` the
variance and covariance are those of the *global* batch: the embeddings are gathered with
gradient (the gather's backward sums the P identical contributions; DDP divides by P). The
mean of the P processes' losses is therefore exactly the loss of one process holding all
P·B samples, and so are the gradients.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from selfsup import distributed
from selfsup.losses.precision import float32_forward


def variance_hinge(z: Tensor, gamma: float, eps: float) -> Tensor:
    """v(Z): mean over dimensions of max(0, γ − std), std = sqrt(unbiased var + ε); z (N, D)."""
    std = (z.var(dim=0) + eps).sqrt()  # (D,)
    return F.relu(gamma - std).mean()


def covariance_penalty(z: Tensor) -> Tensor:
    """c(Z): sum of the squared off-diagonal covariances, divided by D; z (N, D)."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)  # (D, D)
    return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / d


class VICRegLoss(nn.Module):
    """``VICRegLoss()(z1, z2)`` with z1, z2 of shape (B, D) -> scalar.

    Args:
        invariance_weight: λ of the MSE between the views (25).
        variance_weight: μ of the std hinge (25).
        covariance_weight: ν of the off-diagonal covariance (1).
        gamma: target std per dimension (1).
        eps: added to the variance before the square root (1e-4), keeps the gradient finite.
        gather_distributed: variance and covariance over the global batch (all processes).
    """

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        for name, value in [
            ("invariance_weight", invariance_weight),
            ("variance_weight", variance_weight),
            ("covariance_weight", covariance_weight),
            ("gamma", gamma),
        ]:
            if value < 0:
                raise ValueError(f"{name} must be 0 or more, got {value}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.invariance_weight = invariance_weight
        self.variance_weight = variance_weight
        self.covariance_weight = covariance_weight
        self.gamma = gamma
        self.eps = eps
        self.gather_distributed = gather_distributed

    @float32_forward
    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return self.terms(z1, z2)["loss"]

    def terms(self, z1: Tensor, z2: Tensor) -> dict[str, Tensor]:
        """The weighted loss and its three unweighted terms (for logging)."""
        if z1.shape != z2.shape or z1.ndim != 2:
            raise ValueError(
                f"expected two (B, D) tensors of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        z1, z2 = z1.float(), z2.float()
        invariance = F.mse_loss(z1, z2)  # local mean; DDP averaging makes it global
        if self.gather_distributed:
            z1, z2 = distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)  # (N, D)
        if z1.shape[0] < 2:
            raise ValueError("VICReg needs at least 2 samples to measure a variance")
        variance = (
            variance_hinge(z1, self.gamma, self.eps) + variance_hinge(z2, self.gamma, self.eps)
        ) / 2
        covariance = covariance_penalty(z1) + covariance_penalty(z2)
        loss = (
            self.invariance_weight * invariance
            + self.variance_weight * variance
            + self.covariance_weight * covariance
        )
        return {
            "loss": loss,
            "invariance": invariance.detach(),
            "variance": variance.detach(),
            "covariance": covariance.detach(),
        }
