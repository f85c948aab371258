"""Multi-crop views (Caron et al. 2020, SwAV; 2021, DINO): a few large global crops and many
small local crops, each resolution made in one batched kornia call.

DINO's recipe at 224 px: 2 global crops of area 40-100% at 224 px and 8-10 local crops of
area 5-40% at 96 px (3/7 of the side). A local crop costs (96/224)² ≈ 18% of a global one in
a ConvNet, so many local views are cheap. ``local_crop_size`` scales the 96/224 ratio to any
image size (12 px for 28 px images).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from selfsup.views.image import ImageAugment, image_pipeline, normalize, to_float

if TYPE_CHECKING:
    from selfsup.config import RunConfig
    from selfsup.recipe import Choice

LOCAL_RATIO = 96 / 224
"""DINO's local-to-global crop side ratio."""
MIN_LOCAL_SIZE = 4
"""Below 4 px a crop shows almost nothing (and a 3×3 conv has nothing to slide over)."""
PAPER_LOCAL_CROPS = 8
"""DINO's local crops at 224 px (its code's default; the paper's best uses 10)."""
MAX_LOCAL_CROPS = 10
"""The most local crops the rule picks: the paper found nothing gained beyond 10."""


def local_crop_size(image_size: int, multiple: int = 1) -> int:
    """DINO's 96/224 of ``image_size``, rounded to a multiple of ``multiple`` (a ViT's patch
    size), at least ``MIN_LOCAL_SIZE`` px and never more than the image: 28 -> 12, 8 -> 4."""
    multiple = max(1, multiple)
    side = max(multiple, round(image_size * LOCAL_RATIO / multiple) * multiple)
    while side < MIN_LOCAL_SIZE:
        side += multiple
    return min(side, image_size)


def local_crop_count(image_size: int, local_size: int) -> int:
    """Local crops costing the share of a step the paper's 8 do at 224 px: 8 × (96/224)² of a
    global crop's pixels, divided by what one ``local_size`` crop of an ``image_size`` image
    costs. It is 8 where the side ratio is the paper's (28 -> 12 px) and fewer where rounding to
    the patch or the 4-px floor makes local crops relatively larger (8 -> 4 px: 6); 2 to 10."""
    share = PAPER_LOCAL_CROPS * LOCAL_RATIO**2 * (image_size / local_size) ** 2
    return min(MAX_LOCAL_CROPS, max(2, round(share)))


class MultiCropViews(nn.Module):
    """``views(images) -> [globals, locals]``: normalised float crops grouped by resolution.

    ``globals`` is (V_g·B, C, S_g, S_g) and ``locals`` (V_l·B, C, S_l, S_l), view-major (rows
    ``v·B .. v·B + B - 1`` are crop ``v`` of every image), so the encoder runs once per
    resolution and ``x.view(V, B, ...)`` recovers the crops. ``locals`` is left out when
    ``num_local`` is 0. Every crop is an independent draw of its resolution's recipe; the
    sizes are the recipes' ``output_size`` (None: ``image_size`` for global crops,
    ``local_crop_size(image_size)`` for local ones).
    """

    def __init__(
        self,
        channels: int,
        image_size: int,
        global_augment: ImageAugment,
        local_augment: ImageAugment,
        num_global: int = 2,
        num_local: int = 6,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if num_global < 1 or num_local < 0:
            raise ValueError(
                f"need at least one global crop and no negative count, got {num_global}, {num_local}"
            )
        self.num_global = num_global
        self.num_local = num_local
        self.global_size = global_augment.output_size or image_size
        self.local_size = local_augment.output_size or local_crop_size(image_size)
        self.global_pipeline = image_pipeline(global_augment, channels, self.global_size)
        self.local_pipeline = image_pipeline(local_augment, channels, self.local_size)
        self.channels_last = channels_last

    def _crops(self, x: Tensor, pipeline: nn.Module, copies: int) -> Tensor:
        """(B, C, H, W) in [0, 1] -> (copies·B, C, S, S): one random draw per row."""
        v = normalize(pipeline(x.repeat(copies, 1, 1, 1)))  # (V·B, C, S, S)
        return v.contiguous(memory_format=torch.channels_last) if self.channels_last else v

    def forward(self, images: Tensor) -> list[Tensor]:
        x = to_float(images)  # (B, C, H, W) in [0, 1]
        views = [self._crops(x, self.global_pipeline, self.num_global)]
        if self.num_local:
            views.append(self._crops(x, self.local_pipeline, self.num_local))
        return views


def fitted_local_crops(cfg: RunConfig, image_size: int, default_encoder: str) -> list[Choice]:
    """The local crop count of a multi-crop method that leaves it to the data (None), from the
    image size and the encoder's patch (``local_crop_count``); nothing for other methods."""
    from selfsup.encoders import run_encoder_option
    from selfsup.recipe import Choice

    if "num_local_crops" not in cfg.method_args or cfg.method_args["num_local_crops"] is not None:
        return []
    local = cfg.method_args.get("local_augment") or {}
    patch = int(run_encoder_option(cfg, default_encoder, "patch_size", 1))
    side = local.get("output_size") or local_crop_size(image_size, patch)
    count = local_crop_count(image_size, side)
    return [
        Choice(
            "method_args.num_local_crops",
            count,
            f"{count} local crops of {side} px: together they cost what the paper's 8 of 96 px "
            f"do beside 224-px crops ({count * side**2 / image_size**2:.2f} of a global crop)",
        )
    ]
