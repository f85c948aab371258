"""Image corruptions for robustness to distribution shift, after ImageNet-C.

Hendrycks & Dietterich 2019 (arXiv:1903.12261) corrupt test images at five severities and
report accuracy per corruption and its mean. These are batched kornia / tensor operations on
float images in [0, 1] (B, C, H, W), deterministic by seed; severity 0 returns the input
unchanged and the strength grows with severity. The levels follow ImageNet-C where it gives
them (noise, contrast, brightness, JPEG quality) and are scaled to small images
elsewhere (blur sigma, pixelation blocks and elastic displacement in pixels of a 28-px image).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.errors import SelfsupError

SEVERITIES = (1, 2, 3, 4, 5)

Corruption = Callable[[Tensor, int, torch.Generator], Tensor]


def _level(levels: tuple[float, ...], severity: int) -> float:
    return levels[severity - 1]


def gaussian_noise(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """x + N(0, σ²), σ = 0.08 .. 0.38 (ImageNet-C)."""
    sigma = _level((0.08, 0.12, 0.18, 0.26, 0.38), severity)
    noise = torch.randn(x.shape, generator=g).to(x)
    return (x + sigma * noise).clamp(0, 1)


def gaussian_blur(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Gaussian blur with σ = 0.4 .. 1.6 pixels (ImageNet-C's 1-6 px on 224-px images,
    scaled to ~28 px)."""
    from kornia.filters import gaussian_blur2d

    sigma = _level((0.4, 0.7, 1.0, 1.3, 1.6), severity)
    size = 2 * math.ceil(3 * sigma) + 1
    return gaussian_blur2d(x, (size, size), (sigma, sigma), border_type="reflect")


def contrast(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """(x - mean) · c + mean per image, c = 0.4 .. 0.05 (ImageNet-C)."""
    c = _level((0.4, 0.3, 0.2, 0.1, 0.05), severity)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return ((x - mean) * c + mean).clamp(0, 1)


def brightness(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """x + b, b = 0.1 .. 0.5 (ImageNet-C adds it to the HSV value), clipped."""
    from kornia.enhance import adjust_brightness

    return adjust_brightness(x, _level((0.1, 0.2, 0.3, 0.4, 0.5), severity))


def pixelate(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Each block of b × b pixels replaced by its mean, b = 7% .. 21% of the image side
    (2 .. 6 pixels of a 28-px image; ImageNet-C shrinks 224-px images to 60% .. 25%, but
    non-integer shrink factors alias on small images and blur less at some severities than
    at milder ones)."""
    share = _level((0.07, 0.11, 0.14, 0.18, 0.21), severity)
    H, W = x.shape[-2:]
    b = max(1, round(min(H, W) * share))
    means = F.avg_pool2d(x, b, stride=b, ceil_mode=True)  # (B, C, ⌈H/b⌉, ⌈W/b⌉)
    return means.repeat_interleave(b, dim=2).repeat_interleave(b, dim=3)[..., :H, :W]


def jpeg(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """JPEG compression at quality 25 .. 7 (ImageNet-C), kornia's differentiable codec (it
    needs sides that are multiples of 16, so the image is padded and cropped back)."""
    from kornia.enhance import jpeg_codec_differentiable

    quality = _level((25.0, 18.0, 15.0, 10.0, 7.0), severity)
    H, W = x.shape[-2:]
    pad_h, pad_w = -H % 16, -W % 16
    padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    rgb = padded.expand(-1, 3, -1, -1) if x.shape[1] == 1 else padded
    out = jpeg_codec_differentiable(rgb, torch.full((x.shape[0],), quality).to(x))
    out = out.mean(dim=1, keepdim=True) if x.shape[1] == 1 else out
    return out[..., :H, :W].clamp(0, 1)


def elastic(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Elastic deformation (Simard et al. 2003): a smooth random displacement field of
    amplitude alpha = 0.5 .. 2.5 pixels (kornia's elastic_transform2d)."""
    from kornia.geometry.transform import elastic_transform2d

    alpha = _level((0.5, 1.0, 1.5, 2.0, 2.5), severity)
    H, W = x.shape[-2:]
    noise = torch.rand((x.shape[0], 2, H, W), generator=g).to(x) * 2 - 1
    # kornia's alpha scales a displacement in normalised [-1, 1] coordinates
    scale = torch.tensor([2 * alpha / W, 2 * alpha / H]).to(x) * 4
    return elastic_transform2d(x, noise, (15, 15), (3.0, 3.0), scale, padding_mode="border")


def rotation(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """Rotation by ±6 .. ±30 degrees about the centre, the sign drawn per image."""
    from kornia.geometry.transform import rotate

    degrees = _level((6.0, 12.0, 18.0, 24.0, 30.0), severity)
    sign = torch.randint(0, 2, (x.shape[0],), generator=g).to(x) * 2 - 1
    return rotate(x, sign * degrees, padding_mode="zeros")


def occlusion(x: Tensor, severity: int, g: torch.Generator) -> Tensor:
    """A grey square of side 0.2 .. 0.6 of the image at a random place in each image."""
    side = _level((0.2, 0.3, 0.4, 0.5, 0.6), severity)
    B, _, H, W = x.shape
    h, w = max(1, round(H * side)), max(1, round(W * side))
    top = torch.randint(0, H - h + 1, (B,), generator=g)
    left = torch.randint(0, W - w + 1, (B,), generator=g)
    rows = torch.arange(H)[None, :, None]  # (1, H, 1)
    cols = torch.arange(W)[None, None, :]  # (1, 1, W)
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + w)[:, None, None])
    )  # (B, H, W)
    return torch.where(inside[:, None].to(x.device), torch.full_like(x, 0.5), x)


IMAGE_CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "pixelate": pixelate,
    "jpeg": jpeg,
    "elastic": elastic,
    "rotation": rotation,
    "occlusion": occlusion,
}


def corrupt_images(images: Tensor, kind: str, severity: int, seed: int = 0) -> Tensor:
    """Corrupt a uint8 (B, C, H, W) batch: ``kind`` from `IMAGE_CORRUPTIONS` at ``severity``
    0 (unchanged) .. 5; the same seed gives the same corruption. Returns uint8 (B, C, H, W)."""
    if kind not in IMAGE_CORRUPTIONS:
        raise SelfsupError(
            f"unknown image corruption {kind!r}; known: {', '.join(IMAGE_CORRUPTIONS)}"
        )
    if severity not in (0, *SEVERITIES):
        raise SelfsupError(f"corruption severity must be 0..5, got {severity}")
    if severity == 0:
        return images
    g = torch.Generator().manual_seed(seed)
    x = images.float() / 255  # (B, C, H, W) in [0, 1]
    out = IMAGE_CORRUPTIONS[kind](x, severity, g)
    return (out * 255).round().clamp(0, 255).to(torch.uint8)
