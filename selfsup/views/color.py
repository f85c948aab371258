"""Colour-space views: the lightness an encoder sees and the colour it is asked to predict
(colorization, Zhang et al. 2016), computed on whole batches with kornia."""

from __future__ import annotations

import kornia.color
import torch
from torch import Tensor

AB_RANGE = 110.0
"""a and b of sRGB colours lie within ±110 (CIELAB, D65)."""


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """Float RGB (B, 3, H, W) in [0, 1] -> CIELAB (B, 3, H, W): L in [0, 100], a and b in
    about ±110. Always computed in float32, also under autocast."""
    with torch.autocast(device_type=rgb.device.type, enabled=False):
        return kornia.color.rgb_to_lab(rgb.float().clamp(0, 1))


def lightness(rgb: Tensor) -> Tensor:
    """Float RGB (B, 3, H, W) in [0, 1] -> L / 100 (B, 1, H, W) in [0, 1]: what a 1-channel
    encoder trained by colorization sees, in training and in evaluation alike."""
    return rgb_to_lab(rgb)[:, :1] / 100.0
