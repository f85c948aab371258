"""MoCo v3: a query encoder with projector and predictor, a momentum encoder with projector,
and a symmetrised contrastive loss over in-batch keys (no queue).

Chen, Xie, He. "An Empirical Study of Training Self-Supervised Vision Transformers."
ICCV 2021. arXiv:2104.02057.

Works with convnets and ViTs alike. The momentum branch runs in train mode: its keys all
come from the current batch, so batch statistics cannot single out the positive (the paper
uses SyncBN across GPUs; under DDP without it each process normalises its own share).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.engine.teacher import cosine_momentum, ema_update, make_teacher
from selfsup.heads import mlp
from selfsup.losses import MoCoV3Loss
from selfsup.views import ImageAugment, ImageViews


@dataclass
class MoCoV3Config:
    """MoCo v3's hyperparameters; defaults follow the paper's ViT setting."""

    temperature: float = 0.2
    """τ of the contrastive loss: 0.2 for ViTs in the paper (1.0 for ResNets at batch 4096;
    0.2 works better at small batches). Lower it if kNN accuracy stalls."""
    momentum: float = 0.99
    """Start of the momentum encoder's EMA, raised to ``momentum_final`` by a cosine schedule
    (the paper: 0.99; 0.996 for its 300-epoch ResNet runs). Raise it for long runs."""
    momentum_final: float = 1.0
    hidden_dim: int | None = None
    """Hidden width of projector and predictor; None uses 2 × the encoder's width (the
    paper's 4096 for a 2048-wide ResNet-50)."""
    out_dim: int = 256
    proj_layers: int = 3
    """3 for ViTs (the paper), 2 for ResNets in the paper; both work with the convnet."""
    augment: ImageAugment = field(default_factory=ImageAugment)
    """BYOL's recipe in the paper; the SimCLR defaults are close (blur is off below 64 px)."""


class MoCoV3(nn.Module):
    def __init__(self, cfg: MoCoV3Config, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        dim = encoder.embed_dim
        hidden = cfg.hidden_dim or 2 * dim
        # BatchNorm after every layer; the projector's last one without affine (paper's code)
        self.projector = mlp(dim, hidden, cfg.out_dim, layers=cfg.proj_layers, last_norm=True)
        self.predictor = mlp(cfg.out_dim, hidden, cfg.out_dim, layers=2)
        self.momentum_encoder = make_teacher(encoder)
        self.momentum_projector = make_teacher(self.projector)
        self.views = ImageViews(info.channels, info.image_size, cfg.augment, 2, info.channels_last)
        self.loss = MoCoV3Loss(cfg.temperature)

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x1, x2 = self.views(batch["image"])  # 2 × (B, C, S, S)
        h1, h2 = self.encoder(x1), self.encoder(x2)  # 2 × (B, D)
        y1, y2 = self.projector(h1), self.projector(h2)  # 2 × (B, out_dim)
        q1, q2 = self.predictor(y1), self.predictor(y2)
        with torch.no_grad():
            k1 = self.momentum_projector(self.momentum_encoder(x1))  # (B, out_dim)
            k2 = self.momentum_projector(self.momentum_encoder(x2))
        loss = self.loss(q1, q2, k1, k2)
        return {"loss": loss, "features": h1.detach(), "embedding": y1.detach()}

    def on_step_end(self, progress: float) -> None:
        m = cosine_momentum(self.cfg.momentum, self.cfg.momentum_final, progress)
        ema_update(self.momentum_encoder, self.encoder, m)
        ema_update(self.momentum_projector, self.projector, m)
