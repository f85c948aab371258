"""MoCo v2: a query encoder, a momentum key encoder, and InfoNCE against a queue of keys.

He, Fan, Wu, Xie, Girshick. "Momentum Contrast for Unsupervised Visual Representation
Learning." CVPR 2020. arXiv:1911.05722. Chen, Fan, Girshick, He. "Improved Baselines with
Momentum Contrastive Learning." 2020. arXiv:2003.04297 (v2: MLP head, τ=0.2, SimCLR's
augmentations, cosine schedule).

Batch normalisation without shuffling. MoCo's keys must not carry the statistics of their
own batch: if they did, a query could pick its positive key out of the queue by recognising
"same batch as me" instead of "same image". The paper shuffles the key batch across GPUs
(Shuffle BN), which needs several processes. Here the key encoder runs with BatchNorm in
*eval* mode: it normalises with running statistics, which follow the query encoder's
running statistics by the same EMA as the weights (``ema_update`` treats float buffers like
parameters). A key then depends on its own image alone, so there is nothing to leak, and the
rule is the same in one process and under DDP (where the query encoder's buffers are
broadcast from rank 0, so every key encoder is identical). The price is that keys use
slightly lagging statistics early in training, which the momentum encoder's lag already
implies. Encoders without BatchNorm (ViT, GroupNorm) are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.engine.teacher import ema_update, make_teacher
from selfsup.errors import SelfsupError
from selfsup.heads import mlp
from selfsup.losses import InfoNCELoss, KeyQueue
from selfsup.views import ImageAugment, ImageViews


@dataclass
class MoCoV2Config:
    """MoCo v2's hyperparameters; defaults follow the paper, scaled for small data and runs."""

    temperature: float = 0.2
    """τ of InfoNCE (the paper's v2 value). 0.1-0.3 all work; lower it if kNN accuracy stalls."""
    momentum: float = 0.99
    """Key encoder EMA momentum. The paper uses 0.999 for 800 ImageNet epochs; 0.99 suits runs
    of a few thousand steps (the key encoder then follows within ~100 steps)."""
    queue_size: int = 4096
    """Negatives in the queue, K. The paper's 65536 covers a quarter of ImageNet; keep K below
    ~1/4 of the data set (stale keys hurt) and a multiple of the global batch: 4096 for small
    sets and short runs, 16384 for Fashion-MNIST-sized sets trained for an hour or more."""
    proj_hidden_dim: int | None = None
    """Hidden width of the 2-layer MLP head; None uses the encoder's width (2048 for ResNet-50
    in the paper)."""
    proj_dim: int = 128
    symmetric: bool = False
    """Also contrast view 2's queries with view 1's keys (and queue both). The paper's v2 is
    asymmetric; symmetric costs a second key pass and helps short runs a little."""
    augment: ImageAugment = field(default_factory=ImageAugment)
    """MoCo v2 uses SimCLR's recipe (crops, jitter, grayscale, blur, flip): the defaults."""

    def validate(self) -> None:
        if not 0.0 <= self.momentum <= 1.0:
            raise SelfsupError(f"momentum must be in [0, 1], got {self.momentum}")


class MoCoV2(nn.Module):
    def __init__(self, cfg: MoCoV2Config, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        dim = encoder.embed_dim
        # the paper's head: fc-ReLU-fc, no BatchNorm
        self.projector = mlp(dim, cfg.proj_hidden_dim or dim, cfg.proj_dim, norm="none")
        self.key_encoder = make_teacher(encoder)
        self.key_projector = make_teacher(self.projector)
        self.queue = KeyQueue(cfg.queue_size, cfg.proj_dim)
        self.views = ImageViews(info.channels, info.image_size, cfg.augment, 2, info.channels_last)
        self.loss = InfoNCELoss(cfg.temperature)

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        self.key_encoder.eval()  # running statistics only: see the module docstring
        self.key_projector.eval()
        return self.key_projector(self.key_encoder(x))  # (B, proj_dim)

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x1, x2 = self.views(batch["image"])  # 2 × (B, C, S, S)
        h1 = self.encoder(x1)  # (B, D)
        q1 = self.projector(h1)  # (B, proj_dim)
        k2 = self.keys(x2)
        negatives = self.queue.keys.clone()  # (K, proj_dim); the buffer changes below
        if self.cfg.symmetric:
            q2, k1 = self.projector(self.encoder(x2)), self.keys(x1)
            loss = (self.loss(q1, k2, negatives) + self.loss(q2, k1, negatives)) / 2
            self.queue.push(torch.cat([k2, k1]))
        else:
            loss = self.loss(q1, k2, negatives)
            self.queue.push(k2)
        return {"loss": loss, "features": h1.detach(), "embedding": q1.detach()}

    def on_step_end(self, progress: float) -> None:
        ema_update(self.key_encoder, self.encoder, self.cfg.momentum)
        ema_update(self.key_projector, self.projector, self.cfg.momentum)
