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

    crop_scale: tuple[float, float] | None = None
    """Area range of the random resized crop. None fits the paper's range to the image size
    (``fit_crop_scale``: SimCLR's 0.08-1 at 224 px becomes 0.6-1 at 28 px, where a 8% crop
    leaves nothing to recognise); a run writes the fitted range into its config.yaml."""
    paper_crop_scale: tuple[float, float] = (0.08, 1.0)
    """The method's paper's crop range, for 224-px images: what ``crop_scale: null`` fits."""
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
    """Gaussian blur probability; None means ``blur_probability`` of the view size: 0.5 for
    images of 64 px or more and off below (the paper drops blur for CIFAR-sized images)."""
    solarize_p: float = 0.0
    output_size: int | None = None
    """Side of the square views; None keeps the source size."""

    def validate(self) -> None:
        for name, scale in [
            ("crop_scale", self.crop_scale),
            ("paper_crop_scale", self.paper_crop_scale),
        ]:
            if scale is not None and not 0 < scale[0] <= scale[1] <= 1:
                raise SelfsupError(f"{name} must satisfy 0 < min <= max <= 1, got {scale}")
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


class Float32Augment(nn.Module):
    """A kornia pipeline run in float32 whatever autocast the step is under.

    Methods make their views inside ``training_step``, which the engine runs under the run's
    autocast; under bf16-mixed kornia's crop and resample matrices would be computed in bf16
    (8 bits of mantissa), shifting crops by up to a pixel and moving pixel values by up to an
    eighth of the range against the same crop in float32. Views are data, not model compute:
    they are made in float32 under every precision, so a bf16 run trains on the images a
    float32 run does."""

    def __init__(self, pipeline: K.AugmentationSequential) -> None:
        super().__init__()
        self.pipeline = pipeline

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.pipeline(x.float())


def image_pipeline(cfg: ImageAugment, channels: int, image_size: int) -> nn.Module:
    """One view's random transform: a kornia ``AugmentationSequential`` over float [0, 1] batches,
    run in float32 under any autocast (``Float32Augment``)."""
    cfg.validate()
    size = cfg.output_size or image_size
    scale = cfg.crop_scale or fit_crop_scale(cfg.paper_crop_scale, image_size)
    ops: list[nn.Module] = [
        K.RandomResizedCrop(
            (size, size), scale=scale, ratio=cfg.crop_ratio, cropping_mode="resample"
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
    blur_p = cfg.blur_p if cfg.blur_p is not None else blur_probability(size)
    if blur_p > 0:
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # 10% of the side, odd
        ops.append(K.RandomGaussianBlur((kernel, kernel), sigma=(0.1, 2.0), p=blur_p))
    if cfg.solarize_p > 0:
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=cfg.solarize_p))
    return Float32Augment(K.AugmentationSequential(*ops))


PAPER_SIZE = 224
"""The image side the SimCLR/BYOL/DINO/MAE recipes were written for (ImageNet crops)."""
CROP_KEEP_EXPONENT = 0.4
"""How fast a smaller image narrows the crop range: the share of the image a crop may drop,
``1 - min``, is the paper's times (size / 224) ** 0.4. Fitted through two points: the papers'
0.08 at 224 px and 0.6 at 28 px, the best of the crop scales searched for Fashion-MNIST
(docs/benchmarks.md); it gives 0.58 at 32 px, 0.44 at 64 and 0.34 at 96."""


def fit_crop_scale(paper: tuple[float, float], size: int) -> tuple[float, float]:
    """The random-resized-crop area range for ``size``-px images, from the paper's range for
    224-px images: a 8% crop of a 224-px photo is 63 px and still shows an object, of a 28-px
    garment 8 px, which shows nothing. Ranges that end below 1 (DINO's local crops, sized
    separately) and images of 224 px or more keep the paper's range."""
    lo, hi = paper
    if size >= PAPER_SIZE or hi < 1:
        return paper
    keep = (size / PAPER_SIZE) ** CROP_KEEP_EXPONENT
    return (round(1 - (1 - lo) * keep, 2), hi)


def blur_probability(size: int) -> float:
    """Gaussian blur's probability for ``size``-px views: the papers' 0.5 from 64 px up, off
    below (SimCLR drops blur for CIFAR: a few-pixel kernel on 32 px erases the object)."""
    return 0.5 if size >= 64 else 0.0


def fitted_augments(method_args: dict, size: int) -> list:
    """``Choice``s of crop scale and blur for every view recipe in the method's (resolved)
    ``method_args`` that leaves them to the data (None), for ``size``-px images."""
    from selfsup.recipe import Choice

    choices = []
    for name, recipe in method_args.items():
        if not (isinstance(recipe, dict) and "paper_crop_scale" in recipe):
            continue  # not an ImageAugment
        views = f"{name} " if name != "augment" else ""
        if recipe.get("crop_scale") is None:
            paper = tuple(recipe["paper_crop_scale"])
            lo, hi = fit_crop_scale(paper, size)
            choices.append(
                Choice(
                    f"method_args.{name}.crop_scale",
                    [lo, hi],
                    f"{views}crop scale {lo:g}–{hi:g}: images are {size} px "
                    + (
                        f"(the paper's {paper[0]:g}–{paper[1]:g} is for {PAPER_SIZE} px)"
                        if (lo, hi) != paper
                        else "(the paper's range)"
                    ),
                )
            )
        if recipe.get("blur_p") is None and recipe.get("output_size") is None:
            p = blur_probability(size)
            reason = f"p {p:g}" if p else "off"
            choices.append(
                Choice(
                    f"method_args.{name}.blur_p",
                    p,
                    f"{views}blur {reason}: images are {size} px (blur from 64 px up)",
                )
            )
    return choices


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
