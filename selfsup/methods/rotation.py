"""Rotation prediction (RotNet): rotate each image by 0°, 90°, 180° or 270° and classify the
rotation from the encoder's features.

Gidaris, Singh, Komodakis. "Unsupervised Representation Learning by Predicting Image
Rotations." ICLR 2018. arXiv:1803.07728.

``rotations="all"`` puts all four rotations of every image in the batch (the paper's choice,
which it found better than one random rotation per image: the four copies make the
classifier compare the same content under each rotation); the encoder then sees 4× the
batch. ``"random"`` rotates each image once, at the cost of one view per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.heads import mlp
from selfsup.views import ImageAugment, ImageViews, prepare


def _light_augment() -> ImageAugment:
    """Random crop and flip only (the paper's): colour changes do not help predict rotation."""
    return ImageAugment(paper_crop_scale=(0.5, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)


def rotate(x: Tensor, quarter_turns: Tensor) -> Tensor:
    """Rotate each square image x[b] (B, C, S, S) counter-clockwise by quarter_turns[b] × 90°."""
    out = x.clone()
    for k in range(1, 4):
        chosen = quarter_turns == k
        if chosen.any():
            out[chosen] = torch.rot90(x[chosen], k, dims=(2, 3))
    return out


@dataclass
class RotationConfig:
    """RotNet's recipe on top of any encoder: a 4-way classifier on the pooled features."""

    rotations: Literal["all", "random"] = "all"
    """``all``: the four rotations of every image in one batch (the paper's; 4× the compute);
    ``random``: one random rotation per image."""
    head_layers: int = 2
    """1 = a linear classifier on the features; 2 = an MLP (hidden width = the encoder's).
    The paper found the best features a few layers before the classifier: an MLP head
    lets the encoder's last layer stay general, and usually probes better."""
    augment: ImageAugment | None = field(default_factory=_light_augment)
    """Random crop + flip before rotating; null turns it off."""

    def validate(self) -> None:
        if self.head_layers < 1:
            raise SelfsupError(f"head_layers must be 1 or more, got {self.head_layers}")


class RotationPrediction(nn.Module):
    def __init__(self, cfg: RotationConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        self.channels_last = info.channels_last
        dim = encoder.embed_dim
        self.head = mlp(dim, dim, 4, layers=cfg.head_layers)
        self.views = (
            ImageViews(info.channels, info.image_size, cfg.augment, 1, channels_last=False)
            if cfg.augment is not None
            else None
        )

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]
        x = self.views(images)[0] if self.views is not None else prepare(images, False)
        b = x.shape[0]
        if self.cfg.rotations == "all":
            x = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])  # (4B, C, S, S)
            labels = torch.arange(4, device=x.device).repeat_interleave(b)  # (4B,)
        else:
            labels = torch.randint(0, 4, (b,), device=x.device)
            x = rotate(x, labels)  # (B, C, S, S)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.encoder(x)  # (4B or B, D)
        logits = self.head(h)  # (4B or B, 4)
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        # "all": the first B rows are the upright images
        return {"loss": loss, "features": h[:b].detach(), "rotation_acc": accuracy.detach()}

    def on_step_end(self, progress: float) -> None:
        """Rotation prediction has no schedule of its own."""
