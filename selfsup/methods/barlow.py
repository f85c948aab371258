"""Barlow Twins: two augmented views, a wide projector, and a cross-correlation matrix pushed
to the identity.

Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction." ICML 2021. arXiv:2103.03230.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.heads import mlp
from selfsup.losses.barlow import BarlowTwinsLoss
from selfsup.views import ImageAugment, ImageViews


def wide_projector_dim(embed_dim: int) -> int:
    """4 × the encoder's width, at most 8192: the paper's 8192 for ResNet-50's 2048."""
    return min(8192, 4 * embed_dim)


@dataclass
class BarlowTwinsConfig:
    """Barlow Twins' hyperparameters; the paper's ImageNet values, the projector scaled to
    the encoder."""

    lambda_offdiag: float = 5e-3
    """λ, weight of the off-diagonal (redundancy) term. 5e-3 is the paper's at D 8192 and is
    robust over a decade (its Fig. 5). Some follow-ups scale it as 1/D (1e-3 at D 1024) so
    the two terms stay balanced with a narrow projector; try that if the on-diagonal term
    does not fall."""
    proj_dim: int | None = None
    """Width of the projector's hidden and output layers; None = 4 × the encoder's width (at
    most 8192): 1024 for the 256-wide convnet. Wider is better in the paper (Fig. 4) but
    costs D² in the correlation; 2048-8192 on a GPU."""
    proj_layers: int = 3
    """Linear-BN-ReLU twice, then Linear: the paper's projector."""
    loss_scale: float = 1.0
    """Multiplies the loss; 1 is the paper's formula. Irrelevant under AdamW; with LARS/SGD
    the authors' first release used 0.024 and solo-learn 0.1 on CIFAR."""
    augment: ImageAugment = field(default_factory=ImageAugment)

    def validate(self) -> None:
        if self.lambda_offdiag < 0:
            raise SelfsupError(f"lambda_offdiag must be 0 or more, got {self.lambda_offdiag}")
        if self.proj_dim is not None and self.proj_dim < 1:
            raise SelfsupError(f"proj_dim must be a positive integer, got {self.proj_dim}")
        if self.loss_scale <= 0:
            raise SelfsupError(f"loss_scale must be positive, got {self.loss_scale}")


class BarlowTwins(nn.Module):
    def __init__(self, cfg: BarlowTwinsConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        width = cfg.proj_dim or wide_projector_dim(encoder.embed_dim)
        self.projector = mlp(encoder.embed_dim, width, width, layers=cfg.proj_layers)
        self.views = ImageViews(info.channels, info.image_size, cfg.augment, 2, info.channels_last)
        self.loss = BarlowTwinsLoss(cfg.lambda_offdiag, cfg.loss_scale)

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x1, x2 = self.views(batch["image"])  # 2 × (B, C, S, S)
        h1, h2 = self.encoder(x1), self.encoder(x2)  # 2 × (B, D)
        loss = self.loss(self.projector(h1), self.projector(h2))
        return {"loss": loss, "features": h1.detach()}

    def on_step_end(self, progress: float) -> None:
        """Barlow Twins has no schedule of its own."""
