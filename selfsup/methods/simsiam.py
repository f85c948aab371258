"""SimSiam: two views through one encoder, projector and predictor; each prediction chases
the other view's projection behind a stop-gradient. No negatives, no momentum encoder.

Chen & He. "Exploring Simple Siamese Representation Learning." CVPR 2021. arXiv:2011.10566.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.heads import mlp
from selfsup.losses import SimSiamLoss
from selfsup.views import ImageAugment, ImageViews


@dataclass
class SimSiamConfig:
    """SimSiam's hyperparameters; defaults follow the paper, heads scaled to the encoder."""

    proj_dim: int | None = None
    """Width of the 3-layer projector (hidden and output); None uses the encoder's width (the
    paper's 2048 for ResNet-50)."""
    pred_hidden_dim: int | None = None
    """Bottleneck of the 2-layer predictor; None uses a quarter of ``proj_dim`` (the paper's
    512 for 2048). The bottleneck matters: without it training is less stable."""
    stop_gradient: bool = True
    """Keep True. False removes the stop-gradient only to demonstrate collapse (the paper's
    Fig. 2): the loss reaches −1 at once and the collapse monitor fires."""
    augment: ImageAugment = field(default_factory=ImageAugment)
    """The paper uses SimCLR's recipe: the defaults."""


class SimSiam(nn.Module):
    def __init__(self, cfg: SimSiamConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        dim = cfg.proj_dim or encoder.embed_dim
        # Linear-BN-ReLU twice, then Linear and BN (no affine), as in the paper
        self.projector = mlp(encoder.embed_dim, dim, dim, layers=3, last_norm=True)
        self.predictor = mlp(dim, cfg.pred_hidden_dim or max(1, dim // 4), dim, layers=2)
        self.views = ImageViews(info.channels, info.image_size, cfg.augment, 2, info.channels_last)
        self.loss = SimSiamLoss()

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x1, x2 = self.views(batch["image"])  # 2 × (B, C, S, S)
        h1, h2 = self.encoder(x1), self.encoder(x2)  # 2 × (B, D)
        z1, z2 = self.projector(h1), self.projector(h2)  # 2 × (B, proj_dim)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        if self.cfg.stop_gradient:
            z1, z2 = z1.detach(), z2.detach()
        loss = self.loss(p1, p2, z1, z2)
        return {"loss": loss, "features": h1.detach(), "embedding": z1.detach()}

    def on_step_end(self, progress: float) -> None:
        """SimSiam has no schedule of its own."""
