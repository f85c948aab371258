"""Colorization: the encoder sees only the lightness of a colour image and a small decoder
predicts its colours, as a class among quantised ab bins per pixel.

Zhang, Isola, Efros. "Colorful Image Colorization." ECCV 2016. arXiv:1603.08511.

The encoder is built for 1 input channel (``encoder_inputs`` in the method registry tells
the API so); evaluation feeds it the lightness of colour images too (``views.prepare`` with
``channels=1``). The decoder reads the encoder's feature map (``forward_features``; the
pooled vector as a 1×1 map for encoders without one), upsamples it to a quarter of the image
side (Zhang et al. predict at 1/4 resolution) and classifies each pixel's ab into bins of a
10-unit grid over ±110 (22 × 22 = 484 classes). Zhang et al. keep the 313 in-gamut bins of
that grid, use soft targets and rebalance rare colours; here targets are the hard nearest bin,
unweighted, and out-of-gamut bins simply learn to stay improbable. ``target: ab`` regresses
ab with an L2 loss instead (simpler; the paper found it gives greyish, averaged colours).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.views import ImageAugment, normalize, to_float
from selfsup.views.color import AB_RANGE, rgb_to_lab
from selfsup.views.image import image_pipeline


def encoder_inputs(info: DataInfo) -> dict[str, int]:
    """Colorization encodes the lightness channel only: its encoder has 1 input channel."""
    return {"in_channels": 1}


def _light_augment() -> ImageAugment:
    """Random crop and flip only: colour jitter or grayscale would corrupt the target."""
    return ImageAugment(paper_crop_scale=(0.5, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)


def ab_bins(ab: Tensor, bin_size: float) -> Tensor:
    """ab (B, 2, H, W) -> bin index (B, H, W) on a grid of ``bin_size`` over ±AB_RANGE."""
    per_side = math.ceil(2 * AB_RANGE / bin_size)
    index = ((ab + AB_RANGE) / bin_size).floor().long().clamp_(0, per_side - 1)  # (B, 2, H, W)
    return index[:, 0] * per_side + index[:, 1]


@dataclass
class ColorizationConfig:
    """Colorization's choices; the paper's bin grid, a small decoder for small images."""

    target: Literal["bins", "ab"] = "bins"
    """``bins``: cross-entropy over quantised ab (the paper's, which gives vivid colours and
    better features); ``ab``: L2 regression of a and b."""
    bin_size: float = 10.0
    """Side of an ab bin (paper: 10). 20 gives 121 coarse classes for tiny data sets."""
    target_size: int | None = None
    """Side of the predicted colour map; None = a quarter of the image side, at least 4."""
    decoder_dim: int = 128
    """Channels of the decoder's hidden conv layer."""
    augment: ImageAugment | None = field(default_factory=_light_augment)
    """Random crop + flip; never colour jitter. null turns it off."""

    def validate(self) -> None:
        if not 0 < self.bin_size <= 2 * AB_RANGE:
            raise SelfsupError(f"bin_size must lie in (0, {2 * AB_RANGE:g}], got {self.bin_size}")
        if self.target_size is not None and self.target_size < 1:
            raise SelfsupError(f"target_size must be a positive integer, got {self.target_size}")
        if self.decoder_dim < 1:
            raise SelfsupError(f"decoder_dim must be a positive integer, got {self.decoder_dim}")
        if self.augment is not None and (self.augment.jitter_p or self.augment.grayscale_p):
            raise SelfsupError(
                "colorization predicts colour, so its augment must not jitter or grey it: "
                "set augment.jitter_p and augment.grayscale_p to 0"
            )


class Colorization(nn.Module):
    def __init__(self, cfg: ColorizationConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        if info.channels != 3:
            raise SelfsupError(
                f"colorization needs colour images, but the data has {info.channels} channel(s): "
                "pretrain on RGB data (e.g. --data openclipart or folder:PATH of colour images), "
                "or pick a method that works on grayscale (see `selfsup list`)"
            )
        built_for = getattr(encoder, "build_args", {}).get("in_channels", 1)
        if built_for != 1:
            raise SelfsupError(
                f"colorization feeds the encoder 1 channel (lightness) but it was built for "
                f"{built_for}: build it with in_channels=1 (selfsup.methods.encoder_channels)"
            )
        self.cfg = cfg
        self.encoder = encoder
        self.channels_last = info.channels_last
        self.target_size = cfg.target_size or max(4, info.image_size // 4)
        classes = math.ceil(2 * AB_RANGE / cfg.bin_size) ** 2 if cfg.target == "bins" else 2
        dim, hidden = encoder.embed_dim, cfg.decoder_dim
        self.reduce = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)
        )
        self.decode = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, classes, 1),
        )
        self.augment = (
            image_pipeline(cfg.augment, 3, info.image_size) if cfg.augment is not None else None
        )

    def _feature_map(self, x: Tensor) -> Tensor:
        """Encoder features as a map (B, D, h, w); a pooled-only encoder gives a 1×1 map."""
        forward_features = getattr(self.encoder, "forward_features", None)
        if forward_features is not None:
            return forward_features(x)
        return self.encoder(x)[:, :, None, None]

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        rgb = to_float(batch["image"])  # (B, 3, H, W) in [0, 1]
        if self.augment is not None:
            rgb = self.augment(rgb)
        lab = rgb_to_lab(rgb)  # (B, 3, S, S)
        x = normalize(lab[:, :1] / 100.0)  # (B, 1, S, S) lightness
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        fmap = self._feature_map(x)  # (B, D, h, w)
        t = self.target_size
        y = F.interpolate(self.reduce(fmap), size=(t, t), mode="bilinear", align_corners=False)
        out = self.decode(y).float()  # (B, Q or 2, t, t)
        ab = F.adaptive_avg_pool2d(lab[:, 1:], t)  # (B, 2, t, t)
        features = fmap.mean(dim=(2, 3)).detach()  # (B, D), what forward pools
        if self.cfg.target == "bins":
            labels = ab_bins(ab, self.cfg.bin_size)  # (B, t, t)
            loss = F.cross_entropy(out, labels)
            accuracy = (out.argmax(dim=1) == labels).float().mean()
            return {"loss": loss, "features": features, "colour_acc": accuracy.detach()}
        loss = F.mse_loss(out, ab / AB_RANGE)
        error = (out.detach() * AB_RANGE - ab).abs().mean()
        return {"loss": loss, "features": features, "ab_error": error}

    def on_step_end(self, progress: float) -> None:
        """Colorization has no schedule of its own."""
