"""BYOL: an online network (encoder, projector, predictor) regresses the projection of the
other view made by an EMA target network; no negatives.

Grill et al. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning."
NeurIPS 2020. arXiv:2006.07733.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.engine.teacher import cosine_momentum, ema_update, make_teacher
from selfsup.heads import mlp
from selfsup.losses import BYOLLoss
from selfsup.views import ImageAugment, ImageViews


@dataclass
class BYOLConfig:
    """BYOL's hyperparameters; defaults follow the paper, heads scaled to the encoder."""

    momentum: float = 0.996
    """Target EMA momentum at the start, raised to ``momentum_final`` by a cosine schedule
    (the paper's 0.996 → 1). For runs of a few hundred steps 0.99 lets the target keep up."""
    momentum_final: float = 1.0
    hidden_dim: int | None = None
    """Hidden width of projector and predictor; None uses 2 × the encoder's width (the
    paper's 4096 for a 2048-wide ResNet-50)."""
    out_dim: int = 256
    """Width of projections and predictions (the paper's 256)."""
    augment: ImageAugment = field(default_factory=lambda: ImageAugment(saturation=0.2))
    """View 1: the paper's jitter (saturation 0.2), no solarisation. The paper blurs view 1
    always and view 2 at p=0.1; here blur follows ``blur_p`` (off below 64 px)."""
    augment_2: ImageAugment = field(
        default_factory=lambda: ImageAugment(saturation=0.2, solarize_p=0.2)
    )
    """View 2: as view 1 plus solarisation at p=0.2 (the paper's asymmetric second view)."""


class BYOL(nn.Module):
    def __init__(self, cfg: BYOLConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        dim = encoder.embed_dim
        hidden = cfg.hidden_dim or 2 * dim
        self.projector = mlp(dim, hidden, cfg.out_dim)
        self.predictor = mlp(cfg.out_dim, hidden, cfg.out_dim)
        self.target_encoder = make_teacher(encoder)
        self.target_projector = make_teacher(self.projector)
        self.views = ImageViews(
            info.channels, info.image_size, [cfg.augment, cfg.augment_2], 2, info.channels_last
        )
        self.loss = BYOLLoss()

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x1, x2 = self.views(batch["image"])  # 2 × (B, C, S, S)
        h1, h2 = self.encoder(x1), self.encoder(x2)  # 2 × (B, D)
        y1, y2 = self.projector(h1), self.projector(h2)  # 2 × (B, out_dim)
        p1, p2 = self.predictor(y1), self.predictor(y2)
        with torch.no_grad():
            z1 = self.target_projector(self.target_encoder(x1))  # (B, out_dim)
            z2 = self.target_projector(self.target_encoder(x2))
        loss = self.loss(p1, p2, z1, z2)
        return {"loss": loss, "features": h1.detach(), "embedding": y1.detach()}

    def on_step_end(self, progress: float) -> None:
        m = cosine_momentum(self.cfg.momentum, self.cfg.momentum_final, progress)
        ema_update(self.target_encoder, self.encoder, m)
        ema_update(self.target_projector, self.projector, m)
