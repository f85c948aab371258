"""Built-in encoders and their registry.

An encoder is any ``nn.Module`` with an int ``embed_dim`` and ``forward(x) -> (B, D)``
pooled features; token models also have ``forward_tokens(x, mask=None) -> (B, N, D)``
(the ViT: (B, 1 + N, D) with the CLS token first; the text Transformer: (B, L, D)) and
``forward_layers(x, mask=None)`` (data2vec's per-block targets).

Each registered encoder reads one modality: images, (B, C, H, W) floats, built from
``in_channels`` and ``image_size``; or text, (B, L) token ids, built from ``vocab_size``,
``max_length`` and ``pad_id``. ``encoder_inputs(name)`` says which. ``build_encoder``
makes one and records its exact arguments in ``encoder.build_args`` so export can rebuild
it from a YAML file alone.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from selfsup.encoders.convnet import ConvNet
from selfsup.encoders.dilated import DilatedConvEncoder
from selfsup.encoders.dual import DualEncoder
from selfsup.encoders.graph import GNNKind, GraphEncoder
from selfsup.encoders.patch_tst import PatchTransformer
from selfsup.encoders.resnet import NormKind, ResNet
from selfsup.encoders.transformer import PositionKind, TextPoolKind, TextTransformer
from selfsup.encoders.video_vit import VideoTransformer
from selfsup.encoders.vit import PoolKind, VisionTransformer
from selfsup.encoders.wav2vec import Wav2Vec2Encoder
from selfsup.encoders.word_vectors import WordVectors
from selfsup.errors import SelfsupError

__all__ = [
    "ENCODERS",
    "ConvNet",
    "DualEncoder",
    "DilatedConvEncoder",
    "EncoderSpec",
    "ResNet",
    "TextTransformer",
    "VideoTransformer",
    "VisionTransformer",
    "Wav2Vec2Encoder",
    "WordVectors",
    "build_encoder",
    "encoder_config",
    "encoder_inputs",
    "encoder_modality",
]

# What build_encoder passes a builder of each modality (``selfsup.modalities``), besides its options.
INPUTS: dict[str, tuple[str, ...]] = {
    "image": ("in_channels", "image_size"),
    "text": ("vocab_size", "max_length", "pad_id"),
    "audio": ("sample_rate",),
    "pairs": ("in_channels", "image_size", "vocab_size", "max_length", "pad_id"),
    "series": ("in_channels",),
    "video": ("in_channels", "image_size", "frames"),
    "graph": ("in_channels",),
}


@dataclass(frozen=True)
class EncoderSpec:
    """One registry entry.

    ``builder(**inputs, **defaults)`` returns the module, where the inputs are
    ``INPUTS[modality]`` (image: in_channels, image_size; text: vocab_size, max_length,
    pad_id); ``defaults`` also lists every key ``build_encoder`` accepts as an override.
    """

    builder: Callable[..., nn.Module]
    description: str
    defaults: dict[str, Any]
    modality: str = "image"
    """The name of the modality it reads (``selfsup.modalities``)."""


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


def _word_vectors(*, vocab_size: int, max_length: int, pad_id: int, embed_dim: int) -> WordVectors:
    del pad_id  # every special id, [PAD] among them, is left out of the mean
    return WordVectors(vocab_size, embed_dim, max_length)


def _text_transformer(
    *,
    vocab_size: int,
    max_length: int,
    pad_id: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
    positions: PositionKind,
    causal: bool,
    pool: TextPoolKind,
    dropout: float,
    grad_checkpointing: bool,
) -> TextTransformer:
    return TextTransformer(
        vocab_size=vocab_size,
        max_length=max_length,
        pad_id=pad_id,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        positions=positions,
        causal=causal,
        pool=pool,
        dropout=dropout,
        grad_checkpointing=grad_checkpointing,
    )


def _wav2vec2(
    *,
    sample_rate: int,
    conv_dim: int,
    conv_kernels: list,
    conv_strides: list,
    embed_dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
    pos_kernel: int,
    pos_groups: int,
    dropout: float,
) -> Wav2Vec2Encoder:
    return Wav2Vec2Encoder(
        sample_rate=sample_rate,
        conv_dim=conv_dim,
        conv_kernels=[int(k) for k in conv_kernels],
        conv_strides=[int(s) for s in conv_strides],
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        pos_kernel=pos_kernel,
        pos_groups=pos_groups,
        dropout=dropout,
    )


def _dual(
    *,
    in_channels: int,
    image_size: int,
    vocab_size: int,
    max_length: int,
    pad_id: int,
    image_encoder: str,
    image_options: dict[str, Any],
    text_encoder: str,
    text_options: dict[str, Any],
    proj_dim: int,
) -> DualEncoder:
    """An image tower and a text tower of this registry, each built with its own options."""
    image = build_encoder(
        image_encoder, in_channels=in_channels, image_size=image_size, **image_options
    )
    text = build_encoder(
        text_encoder, vocab_size=vocab_size, max_length=max_length, pad_id=pad_id, **text_options
    )
    return DualEncoder(image, text, proj_dim)


def _dilated(
    *, in_channels: int, width: int, embed_dim: int, depth: int, dropout: float
) -> DilatedConvEncoder:
    return DilatedConvEncoder(
        in_channels=in_channels, width=width, embed_dim=embed_dim, depth=depth, dropout=dropout
    )


def _video_vit(
    *,
    in_channels: int,
    image_size: int,
    frames: int,
    patch_size: int,
    tubelet: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
) -> VideoTransformer:
    return VideoTransformer(
        in_channels=in_channels,
        image_size=image_size,
        frames=frames,
        patch_size=patch_size,
        tubelet=tubelet,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
    )


def _gnn(
    *,
    in_channels: int,
    kind: GNNKind,
    hidden: int,
    num_layers: int,
    heads: int,
    norm: str,
    dropout: float,
) -> GraphEncoder:
    return GraphEncoder(
        in_channels=in_channels,
        kind=kind,
        hidden=hidden,
        num_layers=num_layers,
        heads=heads,
        norm=norm,  # type: ignore[arg-type]
        dropout=dropout,
    )


_GNN_DEFAULTS: dict[str, Any] = {"num_layers": 2, "heads": 4, "norm": "batch", "dropout": 0.0}

_TEXT_DEFAULTS: dict[str, Any] = {
    "mlp_ratio": 4.0,
    "positions": "learned",
    "causal": False,
    "pool": "mean",
    "dropout": 0.1,
    "grad_checkpointing": False,
}

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
    "transformer-tiny": EncoderSpec(
        builder=_text_transformer,
        description=(
            "Text Transformer, bidirectional as BERT (D 256, 4 blocks, 4 heads, 3.2M params "
            "+ 256 per vocabulary id); for MLM / data2vec on a CPU (~1,200 tokens/s fwd+bwd "
            "at L 128 on 2 cores, float32); positions=rotary learns offsets, not places"
        ),
        defaults={**_TEXT_DEFAULTS, "embed_dim": 256, "depth": 4, "num_heads": 4},
        modality="text",
    ),
    "transformer-small": EncoderSpec(
        builder=_text_transformer,
        description=(
            "Text Transformer, bidirectional (D 512, 8 blocks, 8 heads, 25M params + 512 per "
            "vocabulary id); 8× the compute of transformer-tiny (~270 tokens/s on 2 CPU "
            "cores): train it on a GPU; grad_checkpointing=True for long sequences"
        ),
        defaults={**_TEXT_DEFAULTS, "embed_dim": 512, "depth": 8, "num_heads": 8},
        modality="text",
    ),
    "gpt-tiny": EncoderSpec(
        builder=_text_transformer,
        description=(
            "Causal text Transformer as GPT (transformer-tiny with causal=True: D 256, 4 "
            "blocks, 3.2M params + 256 per vocabulary id), mean-pooled; for next-token "
            "prediction (clm) on a CPU; positions=rotary as in recent language models"
        ),
        defaults={**_TEXT_DEFAULTS, "embed_dim": 256, "depth": 4, "num_heads": 4, "causal": True},
        modality="text",
    ),
    "word-vectors": EncoderSpec(
        builder=_word_vectors,
        description=(
            "a table of word vectors (D 100, word2vec's size), mean-pooled over a text's "
            "words; for --method word2vec with data.tokenizer=word"
        ),
        defaults={"embed_dim": 100},
        modality="text",
    ),
    "wav2vec2-tiny": EncoderSpec(
        builder=_wav2vec2,
        description=(
            "wav2vec 2.0 layout for a CPU: 6 conv blocks of 64 channels (stride 160: 20 ms "
            "frames at 8 kHz; add a stride-2 block for 16 kHz), Transformer D 128, 3 blocks, "
            "4 heads (0.7M params); for wav2vec2 on speech"
        ),
        defaults={
            "conv_dim": 64,
            "conv_kernels": [10, 3, 3, 3, 2, 2],
            "conv_strides": [5, 2, 2, 2, 2, 2],
            "embed_dim": 128,
            "depth": 3,
            "num_heads": 4,
            "mlp_ratio": 4.0,
            "pos_kernel": 32,
            "pos_groups": 8,
            "dropout": 0.1,
        },
        modality="audio",
    ),
    "wav2vec2-base": EncoderSpec(
        builder=_wav2vec2,
        description=(
            "wav2vec 2.0 BASE (7 conv blocks of 512, 20 ms frames at 16 kHz, D 768, 12 "
            "blocks, 12 heads, 95M params); a GPU model"
        ),
        defaults={
            "conv_dim": 512,
            "conv_kernels": [10, 3, 3, 3, 3, 2, 2],
            "conv_strides": [5, 2, 2, 2, 2, 2, 2],
            "embed_dim": 768,
            "depth": 12,
            "num_heads": 12,
            "mlp_ratio": 4.0,
            "pos_kernel": 128,
            "pos_groups": 16,
            "dropout": 0.1,
        },
        modality="audio",
    ),
    "clip-tiny": EncoderSpec(
        builder=_dual,
        description=(
            "two towers for image–text pairs (CLIP / SigLIP / ALIGN): convnet images + "
            "Transformer text (D 128, 2 blocks), linear projections to 128; ~0.9M params "
            "+ 128 per vocabulary id; image_encoder/text_encoder name any registered towers"
        ),
        defaults={
            "image_encoder": "convnet",
            "image_options": {},
            "text_encoder": "transformer-tiny",
            "text_options": {"embed_dim": 128, "depth": 2, "num_heads": 2, "dropout": 0.0},
            "proj_dim": 128,
        },
        modality="pairs",
    ),
    "ts2vec-dilated": EncoderSpec(
        builder=_dilated,
        description=(
            "TS2Vec's dilated convolutional encoder for series (B, T, C): 10 residual blocks "
            "of width 64, dilation doubling per block, 320-d per-step features max-pooled over "
            "time (0.6M params); NaN steps are masked; TS2Vec trains it at ~4 series/s (GunPoint, T 150, batch 8) on one heavily loaded CPU core"
        ),
        defaults={"width": 64, "embed_dim": 320, "depth": 10, "dropout": 0.1},
        modality="series",
    ),
    "patch-tst": EncoderSpec(
        builder=PatchTransformer,
        description=(
            "PatchTST's channel-independent Transformer for series (B, T, C): each channel "
            "instance-normalised and cut into patches of 12 steps, D 128, 3 blocks, 16 heads "
            "(0.6M params), each channel mean-pooled, concatenated (C·128-d); for masked-patches"
        ),
        defaults={
            "patch_len": 12,
            "stride": 12,
            "d_model": 128,
            "depth": 3,
            "num_heads": 16,
            "mlp_ratio": 4.0,
            "dropout": 0.2,
            "instance_norm": True,
        },
        modality="series",
    ),
    "video-vit-tiny": EncoderSpec(
        builder=_video_vit,
        description=(
            "space-time ViT for clips (B, T, C, H, W): cubes of 2 frames × 4² pixels, D 192, "
            "4 blocks, 3 heads (1.8M params), mean-pooled; VideoMAE's encoder at CPU size"
        ),
        defaults={
            "patch_size": 4,
            "tubelet": 2,
            "embed_dim": 192,
            "depth": 4,
            "num_heads": 3,
            "mlp_ratio": 4.0,
        },
        modality="video",
    ),
    "gcn": EncoderSpec(
        builder=_gnn,
        description=(
            "GCN (Kipf & Welling) from PyG, 2 layers, width 256, BatchNorm + PReLU as in BGRL; "
            "node embeddings of the sampled neighbourhood, the seed node's (or a graph's mean) pooled"
        ),
        defaults={**_GNN_DEFAULTS, "kind": "gcn", "hidden": 256},
        modality="graph",
    ),
    "gin": EncoderSpec(
        builder=_gnn,
        description=(
            "GIN (Xu et al.) from PyG, 2 layers, width 256, MLP aggregators; the graph-level "
            "encoder of GraphCL and GraphMAE; num_layers=3-5 for graph classification"
        ),
        defaults={**_GNN_DEFAULTS, "kind": "gin", "hidden": 256},
        modality="graph",
    ),
    "gat": EncoderSpec(
        builder=_gnn,
        description=(
            "GAT (Velickovic et al.) from PyG, 2 layers, width 256 over 4 heads; GraphMAE's "
            "node-level encoder (the paper: 512 wide on Cora)"
        ),
        defaults={**_GNN_DEFAULTS, "kind": "gat", "hidden": 256},
        modality="graph",
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


def _spec(name: str) -> EncoderSpec:
    """The registry entry ``name``, or a SelfsupError that suggests a close name."""
    if name not in ENCODERS:
        close = difflib.get_close_matches(name, list(ENCODERS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SelfsupError(
            f"unknown encoder {name!r}: {hint}known encoders are {', '.join(ENCODERS)}"
        )
    return ENCODERS[name]


def encoder_modality(name: str) -> str:
    """What encoder ``name`` reads: "image" ((B, C, H, W) floats) or "text" ((B, L) ids)."""
    return _spec(name).modality


def run_encoder_option(cfg: Any, default_encoder: str, key: str, default: Any = None) -> Any:
    """The value a run's encoder will be built with for option ``key``: the run's
    ``encoder_args``, else the registry's default for the encoder (``cfg.encoder`` or the
    modality's ``default_encoder``), else ``default``."""
    spec = ENCODERS.get(cfg.encoder or default_encoder)
    fallback = spec.defaults.get(key, default) if spec else default
    return cfg.encoder_args.get(key, fallback)


def encoder_inputs(name: str) -> tuple[str, ...]:
    """The inputs ``build_encoder`` needs for encoder ``name``, besides its options:
    ("in_channels", "image_size") for image encoders, ("vocab_size", "max_length",
    "pad_id") for text encoders (pad_id may be left out: 0)."""
    return INPUTS[_spec(name).modality]


def _check_inputs(name: str, spec: EncoderSpec, given: dict[str, int | None]) -> dict[str, int]:
    """The inputs of ``spec``'s modality from ``given``, checked; SelfsupError otherwise."""
    needed = INPUTS[spec.modality]
    stray = [key for key, value in given.items() if value is not None and key not in needed]
    if stray:
        raise SelfsupError(
            f"encoder {name!r} reads {spec.modality} and takes {', '.join(needed)}, not "
            f"{', '.join(stray)}: pass only the inputs selfsup.encoders.encoder_inputs names"
        )
    if "pad_id" in needed and given["pad_id"] is None:
        given = {**given, "pad_id": 0}
    inputs: dict[str, int] = {}
    for key in needed:
        value = given[key]
        if value is None:
            raise SelfsupError(
                f"encoder {name!r} needs {key}: build it with "
                + ", ".join(f"{k}=..." for k in needed)
            )
        lowest = 0 if key == "pad_id" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            kind = "a non-negative" if lowest == 0 else "a positive"
            raise SelfsupError(f"{key} must be {kind} integer, got {value!r}")
        inputs[key] = value
    if "pad_id" in inputs and inputs["pad_id"] >= inputs["vocab_size"]:
        raise SelfsupError(
            f"pad_id {inputs['pad_id']} is not an id of a vocabulary of {inputs['vocab_size']}: "
            "pass the tokenizer's vocab_size and pad id"
        )
    return inputs


def build_encoder(
    name: str,
    *,
    in_channels: int | None = None,
    image_size: int | None = None,
    vocab_size: int | None = None,
    max_length: int | None = None,
    pad_id: int | None = None,
    sample_rate: int | None = None,
    frames: int | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build the registered encoder ``name``.

    Image encoders take (B, in_channels, image_size, image_size) inputs and need
    ``in_channels`` and ``image_size``; text encoders take (B, L <= max_length) token ids
    and need ``vocab_size`` and ``max_length`` (``pad_id`` defaults to 0).
    ``encoder_inputs(name)`` lists them; passing the other modality's inputs is an error.
    ``overrides`` replace entries of ``ENCODERS[name].defaults`` (e.g. ``width=16``,
    ``depth=4``). The result carries ``build_args``: the name, the inputs and every
    option, so ``build_encoder(**encoder.build_args)`` makes the same architecture again.
    """
    spec = _spec(name)
    inputs = _check_inputs(
        name,
        spec,
        {
            "in_channels": in_channels,
            "image_size": image_size,
            "vocab_size": vocab_size,
            "max_length": max_length,
            "pad_id": pad_id,
            "sample_rate": sample_rate,
            "frames": frames,
        },
    )
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
    encoder = spec.builder(**inputs, **options)
    encoder.build_args = {"name": name, **inputs, **options}  # type: ignore[assignment]
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
