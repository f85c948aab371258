"""CIFAR-style ResNet: a 3×3 stride-1 stem and no max-pool, so 32 px images keep detail.

This is the backbone of the SimCLR / MoCo / BYOL CIFAR-10 experiments: the ImageNet
ResNet's 7×7 stride-2 stem and max-pool would shrink a 32 px image to 8 px before
the first block. Also home of the normalisation helper shared by the CNN encoders.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import nn

from selfsup.errors import SelfsupError

NormKind = Literal["batch", "group", "none"]


def check_norm(norm: str) -> None:
    """Raise SelfsupError unless ``norm`` is one of the NormKind options."""
    options = get_args(NormKind)
    if norm not in options:
        raise SelfsupError(
            f"unknown norm {norm!r}: use one of {', '.join(options)} "
            "('batch' is standard; 'group' for tiny or per-process batches)"
        )


def make_norm(norm: NormKind, channels: int) -> nn.Module:
    """A 2-D normalisation over ``channels`` feature maps; Identity for ``"none"``.

    GroupNorm uses 8 groups, or the largest divisor of 8 that divides ``channels``.
    """
    check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    return nn.Identity()


def conv3x3(in_channels: int, out_channels: int, stride: int, bias: bool) -> nn.Conv2d:
    """A 3×3 convolution with padding 1: (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


def init_conv_weights(model: nn.Module) -> None:
    """He (fan-out) initialisation of every convolution kernel, zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions plus a shortcut: (B, C_in, H, W) -> (B, C_out, H/s, W/s).

    The residual branch ends in a zero-initialised scale (the last norm's weight, or a
    scalar gain when ``norm="none"``, as in SkipInit), so every block starts as the
    identity and deep nets train from the first step (Goyal et al. 2017).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: NormKind) -> None:
        super().__init__()
        bias = norm == "none"
        self.conv1 = conv3x3(in_channels, out_channels, stride, bias)
        self.norm1 = make_norm(norm, out_channels)
        self.conv2 = conv3x3(out_channels, out_channels, 1, bias)
        self.norm2 = make_norm(norm, out_channels)
        self.act = nn.ReLU(inplace=True)
        # Without a norm there is no weight to zero, so a learned scalar takes its place.
        self.gain = nn.Parameter(torch.zeros(())) if norm == "none" else None
        if isinstance(self.norm2, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.zeros_(self.norm2.weight)

        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias),
                make_norm(norm, out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        if self.gain is not None:
            out = out * self.gain
        return self.act(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-18 layout with a CIFAR stem: (B, C, H, W) -> (B, 8·width) pooled features.

    Stem: 3×3 stride-1 conv to ``width`` channels, norm, ReLU (no max-pool). Then four
    stages of two BasicBlocks with widths w, 2w, 4w, 8w and strides 1, 2, 2, 2, and a
    global average pool. ``width=64`` is ResNet-18 (11M parameters, embed_dim 512).

    Args:
        in_channels: image channels C (1 for grey, 3 for RGB).
        width: channels of the first stage; 64 is the standard ResNet-18.
        norm: "batch" (standard), "group" (8 groups; for very small or per-process
            batches) or "none" (no normalisation; residual branches use a zero-init gain).
    """

    def __init__(self, in_channels: int = 3, width: int = 64, norm: NormKind = "batch") -> None:
        super().__init__()
        check_norm(norm)
        if width < 1:
            raise SelfsupError(f"ResNet width must be a positive integer, got {width}")
        self.embed_dim: int = 8 * width
        self.stem = nn.Sequential(
            conv3x3(in_channels, width, 1, bias=norm == "none"),
            make_norm(norm, width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        channels = width
        for multiplier, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            out_channels = width * multiplier
            stages.append(
                nn.Sequential(
                    BasicBlock(channels, out_channels, stride, norm),
                    BasicBlock(out_channels, out_channels, 1, norm),
                )
            )
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        init_conv_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 8·width, ⌈H/8⌉, ⌈W/8⌉) feature map before pooling."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D) globally average-pooled features, D = embed_dim."""
        return self.forward_features(x).mean(dim=(2, 3))  # (B, D)
