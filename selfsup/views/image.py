"""Image views made on whole batches, on the training device, with kornia.

The batch arrives as uint8 (B, C, H, W) straight from the loader; every random choice is
drawn per image but applied in one batched call: crop + resize is one resample
(kornia's ``cropping_mode="resample"``), colour jitter and grayscale are batched tensor
arithmetic. Nothing here loops over images in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from selfsup.errors import SelfsupError

MEAN = 0.5
STD = 0.25


def to_float(images: Tensor) -> Tensor:
    """uint8 (B, C, H, W) in 0..255 -> float (B, C, H, W) in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def normalize(images: Tensor) -> Tensor:
    """The input normalisation every encoder sees, in training and in evaluation alike."""
    return (images - MEAN) / STD


def prepare(images: Tensor, channels_last: bool = True, channels: int | None = None) -> Tensor:
    """uint8 batch -> normalised float encoder input, no augmentation (evaluation, export).

    ``channels``: the channels the encoder takes, if known; a 1-channel encoder given colour
    images sees their lightness (L of CIELAB), as colorization trains it."""
    x = to_float(images)
    if channels == 1 and x.ndim == 4 and x.shape[1] == 3:
        from selfsup.views.color import lightness

        x = lightness(x)
    x = normalize(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


@dataclass
class ImageAugment:
    """The SimCLR augmentation recipe (Chen et al. 2020, appendix A), with the settings that
    suit small and 1-channel images; the same family serves MoCo, BYOL, DINO and friends."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    """Area range of the random resized crop. 0.08-1 is the paper's; 0.2-1 is gentler for
    tiny images (≤ 32 px) where a 8% crop leaves little to recognise."""
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    """Colour jitter strength s=0.5 (the paper's CIFAR setting): 0.8s, 0.8s, 0.8s, 0.2s.
    Saturation and hue are skipped for 1-channel images."""
    grayscale_p: float = 0.2
    blur_p: float | None = None
    """Gaussian blur probability; None means 0.5 for images ≥ 64 px and off below (the paper
    drops blur for CIFAR-sized images)."""
    solarize_p: float = 0.0
    output_size: int | None = None
    """Side of the square views; None keeps the source size."""

    def validate(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise SelfsupError(
                f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}"
            )
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1] < float("inf"):
            raise SelfsupError(
                f"crop_ratio must satisfy 0 < min <= max (width/height, finite), got {self.crop_ratio}"
            )
        if self.output_size is not None and not 1 <= self.output_size <= 4096:
            raise SelfsupError(
                f"output_size must be a number of pixels from 1 to 4096, got {self.output_size}"
            )
        for name, strength in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ]:
            if not 0 <= strength < float("inf"):
                raise SelfsupError(
                    f"{name} is a jitter strength and must be 0 or more, got {strength}"
                )
        if not 0 <= self.hue <= 0.5:
            raise SelfsupError(f"hue is a jitter strength and must lie in [0, 0.5], got {self.hue}")
        probabilities = {
            "flip_p": self.flip_p,
            "jitter_p": self.jitter_p,
            "grayscale_p": self.grayscale_p,
            "solarize_p": self.solarize_p,
            "blur_p": 0.0 if self.blur_p is None else self.blur_p,
        }
        for name, p in probabilities.items():
            if not 0 <= p <= 1:
                raise SelfsupError(f"{name} is a probability and must lie in [0, 1], got {p}")


def image_pipeline(cfg: ImageAugment, channels: int, image_size: int) -> nn.Module:
    """One view's random transform as a kornia ``AugmentationSequential`` over float [0, 1] batches."""
    cfg.validate()
    size = cfg.output_size or image_size
    ops: list[nn.Module] = [
        K.RandomResizedCrop(
            (size, size), scale=cfg.crop_scale, ratio=cfg.crop_ratio, cropping_mode="resample"
        ),
    ]
    if cfg.flip_p > 0:
        ops.append(K.RandomHorizontalFlip(p=cfg.flip_p))
    if cfg.jitter_p > 0:
        if channels == 3:
            ops.append(
                K.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=cfg.jitter_p)
            )
        else:
            ops.append(K.ColorJitter(cfg.brightness, cfg.contrast, p=cfg.jitter_p))
    if channels == 3 and cfg.grayscale_p > 0:
        ops.append(K.RandomGrayscale(p=cfg.grayscale_p))
    blur_p = cfg.blur_p if cfg.blur_p is not None else (0.5 if size >= 64 else 0.0)
    if blur_p > 0:
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # 10% of the side, odd
        ops.append(K.RandomGaussianBlur((kernel, kernel), sigma=(0.1, 2.0), p=blur_p))
    if cfg.solarize_p > 0:
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=cfg.solarize_p))
    return K.AugmentationSequential(*ops)


class ImageViews(nn.Module):
    """``views(images) -> [view_1, ..., view_V]``, each a normalised float (B, C, S, S) batch.

    ``augments`` gives one recipe per view (BYOL's asymmetric views), or one shared by all.
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        augments: ImageAugment | list[ImageAugment],
        num_views: int = 2,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        recipes = augments if isinstance(augments, list) else [augments] * num_views
        self.pipelines = nn.ModuleList(image_pipeline(r, channels, image_size) for r in recipes)
        self.channels_last = channels_last

    def forward(self, images: Tensor) -> list[Tensor]:
        x = to_float(images)  # (B, C, H, W) in [0, 1]
        views = []
        for pipeline in self.pipelines:
            v = normalize(pipeline(x))
            views.append(
                v.contiguous(memory_format=torch.channels_last) if self.channels_last else v
            )
        return views
