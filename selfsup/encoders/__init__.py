"""Built-in encoders and their registry.

An encoder is any ``nn.Module`` with an int ``embed_dim`` and ``forward(x) -> (B, D)``
pooled features; token models (the ViT) also have ``forward_tokens(x, mask=None) ->
(B, 1 + N, D)`` with the CLS token first. ``build_encoder`` makes a registered one and
records its exact arguments in ``encoder.build_args`` so export can rebuild it from a
YAML file alone.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from selfsup.encoders.convnet import ConvNet
from selfsup.encoders.resnet import NormKind, ResNet
from selfsup.encoders.vit import PoolKind, VisionTransformer
from selfsup.errors import SelfsupError

__all__ = [
    "ENCODERS",
    "ConvNet",
    "EncoderSpec",
    "ResNet",
    "VisionTransformer",
    "build_encoder",
    "encoder_config",
]


@dataclass(frozen=True)
class EncoderSpec:
    """One registry entry.

    ``builder(in_channels=..., image_size=..., **defaults)`` returns the module;
    ``defaults`` also lists every key ``build_encoder`` accepts as an override.
    """

    builder: Callable[..., nn.Module]
    description: str
    defaults: dict[str, Any]


def _resnet(*, in_channels: int, image_size: int, width: int, norm: NormKind) -> ResNet:
    del image_size  # the CIFAR ResNet works at any size; recorded for export only
    return ResNet(in_channels=in_channels, width=width, norm=norm)


def _convnet(*, in_channels: int, image_size: int, width: int, norm: NormKind) -> ConvNet:
    return ConvNet(in_channels=in_channels, image_size=image_size, width=width, norm=norm)


def _vit(
    *,
    in_channels: int,
    image_size: int,
    patch_size: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
    pool: PoolKind,
    grad_checkpointing: bool,
) -> VisionTransformer:
    return VisionTransformer(
        in_channels=in_channels,
        image_size=image_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        pool=pool,
        grad_checkpointing=grad_checkpointing,
    )


_VIT_DEFAULTS: dict[str, Any] = {
    "patch_size": 4,
    "depth": 12,
    "mlp_ratio": 4.0,
    "pool": "cls",
    "grad_checkpointing": False,
}

ENCODERS: dict[str, EncoderSpec] = {
    "resnet18": EncoderSpec(
        builder=_resnet,
        description=(
            "ResNet-18, CIFAR stem (3×3, no max-pool); 11M params, embed 512; the standard "
            "SSL backbone for 32 px images; slow on a CPU (~80 img/s fwd+bwd at 28 px, 2 cores)"
        ),
        defaults={"width": 64, "norm": "batch"},
    ),
    "resnet18-narrow": EncoderSpec(
        builder=_resnet,
        description=(
            "ResNet-18 at width 16 (0.7M params, embed 128); the ResNet for a CPU: "
            "~1070 img/s fwd+bwd at 28 px on 2 cores, 3.3× width 32"
        ),
        defaults={"width": 16, "norm": "batch"},
    ),
    "convnet": EncoderSpec(
        builder=_convnet,
        description=(
            "4-block ConvNet, widths 32-256 (0.4M params, embed 256); the quickest useful "
            "encoder for 8-32 px images on a laptop (~1800 img/s fwd+bwd at 28 px, 2 cores)"
        ),
        defaults={"width": 32, "norm": "batch"},
    ),
    "vit-tiny": EncoderSpec(
        builder=_vit,
        description=(
            "ViT-Tiny (D 192, 12 blocks, 3 heads, 5.5M params), patch 4; for MAE / DINO / "
            "iBOT; set patch_size=2 for 8 px images and depth=4-6 on a CPU"
        ),
        defaults={**_VIT_DEFAULTS, "embed_dim": 192, "num_heads": 3},
    ),
    "vit-small": EncoderSpec(
        builder=_vit,
        description=(
            "ViT-Small (D 384, 12 blocks, 6 heads, 21M params), patch 4; the DINO / MAE "
            "reference size; needs a GPU for useful training"
        ),
        defaults={**_VIT_DEFAULTS, "embed_dim": 384, "num_heads": 6},
    ),
}


def _check_override(key: str, value: Any, default: Any) -> None:
    """Raise SelfsupError unless ``value`` has the type of ``default`` (ints pass as floats)."""
    expected = type(default)
    ok = isinstance(value, expected) and (expected is bool or not isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise SelfsupError(
            f"encoder option {key!r} must be {expected.__name__} (like {default!r}), "
            f"got {type(value).__name__} {value!r}"
        )


def build_encoder(name: str, *, in_channels: int, image_size: int, **overrides: Any) -> nn.Module:
    """Build the registered encoder ``name`` for (B, in_channels, image_size, image_size) inputs.

    ``overrides`` replace entries of ``ENCODERS[name].defaults`` (e.g. ``width=16``,
    ``depth=4``). The result carries ``build_args``: the name and every argument, so
    ``build_encoder(**encoder.build_args)`` makes the same architecture again.
    """
    if name not in ENCODERS:
        close = difflib.get_close_matches(name, list(ENCODERS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SelfsupError(
            f"unknown encoder {name!r}: {hint}known encoders are {', '.join(ENCODERS)}"
        )
    for label, value in (("in_channels", in_channels), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SelfsupError(f"{label} must be a positive integer, got {value!r}")
    spec = ENCODERS[name]
    for key, value in overrides.items():
        if key not in spec.defaults:
            raise SelfsupError(
                f"encoder {name!r} has no option {key!r}: accepted options are "
                f"{', '.join(sorted(spec.defaults))}"
            )
        _check_override(key, value, spec.defaults[key])
        if isinstance(spec.defaults[key], float):
            overrides[key] = float(value)
    options = {**spec.defaults, **overrides}
    encoder = spec.builder(in_channels=in_channels, image_size=image_size, **options)
    encoder.build_args = {
        "name": name,
        "in_channels": in_channels,
        "image_size": image_size,
        **options,
    }
    return encoder


def encoder_config(encoder: nn.Module) -> dict[str, Any]:
    """The ``build_args`` of an encoder made by ``build_encoder`` (a copy, YAML-ready)."""
    build_args = getattr(encoder, "build_args", None)
    if not isinstance(build_args, dict):
        raise SelfsupError(
            f"{type(encoder).__name__} has no build_args: make it with "
            "selfsup.encoders.build_encoder so it can be exported and rebuilt"
        )
    return dict(build_args)
