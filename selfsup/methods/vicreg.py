"""VICReg: two augmented views, a wide expander, and three terms on the embeddings: agree
(invariance), keep every dimension's std above 1 (variance), decorrelate (covariance).

Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning." ICLR 2022. arXiv:2105.04906.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.heads import mlp
from selfsup.losses.vicreg import VICRegLoss
from selfsup.views import ImageAugment, ImageViews


@dataclass
class VICRegConfig:
    """VICReg's hyperparameters; the paper's values, the expander scaled to the encoder."""

    invariance_weight: float = 25.0
    """λ. The paper's λ = μ = 25, ν = 1 is its best setting (Table 7); keep λ = μ and raise
    both if the invariance term does not fall."""
    variance_weight: float = 25.0
    """μ. Lower it (e.g. 10) if the std hinge dominates the loss long after warm-up."""
    covariance_weight: float = 1.0
    """ν."""
    gamma: float = 1.0
    """Target std of every embedding dimension."""
    eps: float = 1e-4
    expander_dim: int | None = None
    """Width of the expander's hidden and output layers; None = 4 × the encoder's width (at
    most 8192, the paper's for ResNet-50): 1024 for the 256-wide convnet."""
    expander_layers: int = 3
    """Linear-BN-ReLU twice, then Linear: the paper's expander."""
    augment: ImageAugment = field(default_factory=ImageAugment)

    def validate(self) -> None:
        for name in ("invariance_weight", "variance_weight", "covariance_weight", "gamma"):
            if getattr(self, name) < 0:
                raise SelfsupError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.eps <= 0:
            raise SelfsupError(f"eps must be positive, got {self.eps}")
        if self.expander_dim is not None and self.expander_dim < 1:
            raise SelfsupError(f"expander_dim must be a positive integer, got {self.expander_dim}")


class VICReg(nn.Module):
    def __init__(self, cfg: VICRegConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        width = cfg.expander_dim or min(8192, 4 * encoder.embed_dim)
        self.expander = mlp(encoder.embed_dim, width, width, layers=cfg.expander_layers)
        self.views = ImageViews(info.channels, info.image_size, cfg.augment, 2, info.channels_last)
        self.loss = VICRegLoss(
            cfg.invariance_weight,
            cfg.variance_weight,
            cfg.covariance_weight,
            cfg.gamma,
            cfg.eps,
        )

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x1, x2 = self.views(batch["image"])  # 2 × (B, C, S, S)
        h1, h2 = self.encoder(x1), self.encoder(x2)  # 2 × (B, D)
        terms = self.loss.terms(self.expander(h1), self.expander(h2))
        return {**terms, "features": h1.detach()}

    def on_step_end(self, progress: float) -> None:
        """VICReg has no schedule of its own."""
