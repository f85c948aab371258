"""SimCLR: two augmented views of each image, a projection head, and NT-Xent.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations." ICML 2020. arXiv:2002.05709.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from selfsup.heads import mlp
from selfsup.losses import NTXentLoss
from selfsup.methods.protocol import DataInfo
from selfsup.views import ImageAugment, ImageViews


@dataclass
class SimCLRConfig:
    """SimCLR's hyperparameters; defaults follow the paper's small-image (CIFAR) setting."""

    temperature: float = 0.2
    """τ of NT-Xent. The paper uses 0.1 at batch 4096 and 0.5 for CIFAR; 0.2 works well at
    batch 256. Lower it if kNN accuracy plateaus early; raise it if the loss is unstable."""
    proj_hidden_dim: int | None = None
    """Hidden width of the projection MLP; None uses the encoder's width (as the paper does)."""
    proj_dim: int = 128
    proj_layers: int = 2
    augment: ImageAugment = field(default_factory=ImageAugment)


class SimCLR(nn.Module):
    def __init__(self, cfg: SimCLRConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        dim = encoder.embed_dim
        self.projector = mlp(dim, cfg.proj_hidden_dim or dim, cfg.proj_dim, layers=cfg.proj_layers)
        self.views = ImageViews(info.channels, info.image_size, cfg.augment, 2, info.channels_last)
        self.loss = NTXentLoss(cfg.temperature)

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x1, x2 = self.views(batch["image"])  # 2 × (B, C, S, S)
        h1, h2 = self.encoder(x1), self.encoder(x2)  # 2 × (B, D)
        loss = self.loss(self.projector(h1), self.projector(h2))
        return {"loss": loss, "features": h1.detach()}

    def on_step_end(self, progress: float) -> None:
        """SimCLR has no schedule of its own."""
