"""The method registry: an explicit dict that ``selfsup list`` prints.

Adding a method is one new file under ``methods/`` with a config dataclass and an
``nn.Module`` that has ``encoder``, ``training_step`` and ``on_step_end``, plus one entry here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from selfsup.config import from_dict
from selfsup.contracts import Method, missing_members
from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.methods.align import ALIGN, ALIGNConfig
from selfsup.methods.autoencoder import Autoencoder, AutoencoderConfig
from selfsup.methods.barlow import BarlowTwins, BarlowTwinsConfig
from selfsup.methods.beit import BEiT, BEiTConfig
from selfsup.methods.bgrl import BGRL, BGRLConfig
from selfsup.methods.byol import BYOL, BYOLConfig
from selfsup.methods.clip import CLIP, CLIPConfig
from selfsup.methods.clm import CLM, CLMConfig
from selfsup.methods.colorization import Colorization, ColorizationConfig
from selfsup.methods.colorization import encoder_inputs as lightness_inputs
from selfsup.methods.data2vec import Data2Vec, Data2VecConfig
from selfsup.methods.dino import DINO, DINOConfig
from selfsup.methods.graphcl import GraphCL, GraphCLConfig
from selfsup.methods.graphmae import GraphMAE, GraphMAEConfig
from selfsup.methods.hubert import HuBERT, HuBERTConfig
from selfsup.methods.jigsaw import Jigsaw, JigsawConfig
from selfsup.methods.mae import MAE, MAEConfig
from selfsup.methods.masked_patches import MaskedPatches, MaskedPatchesConfig
from selfsup.methods.mlm import MLM, MLMConfig
from selfsup.methods.moco import MoCoV2, MoCoV2Config
from selfsup.methods.mocov3 import MoCoV3, MoCoV3Config
from selfsup.methods.rotation import RotationConfig, RotationPrediction
from selfsup.methods.siglip import SigLIP, SigLIPConfig
from selfsup.methods.simclr import SimCLR, SimCLRConfig
from selfsup.methods.simmim import SimMIM, SimMIMConfig
from selfsup.methods.simsiam import SimSiam, SimSiamConfig
from selfsup.methods.ts2vec import TS2Vec, TS2VecConfig
from selfsup.methods.vicreg import VICReg, VICRegConfig
from selfsup.methods.videomae import VideoMAE, VideoMAEConfig
from selfsup.methods.wav2vec2 import Wav2Vec2, Wav2Vec2Config
from selfsup.methods.word2vec import Word2Vec, Word2VecConfig


@dataclass(frozen=True)
class MethodSpec:
    config: type
    build: Callable[..., nn.Module]
    description: str
    paper: str
    modalities: tuple[str, ...] = ("image",)
    """The modalities (``selfsup.modalities``) whose data it learns from."""
    needs_color: bool = False
    """The method only works on colour (3-channel) images and rejects grayscale data."""
    encoder_inputs: Callable[[DataInfo], dict[str, Any]] | None = None
    """Encoder inputs the method sets instead of the data's modality (``build_encoder``'s
    keywords); None = the modality's. Colorization asks for ``in_channels=1`` (it encodes
    lightness); see ``encoder_channels`` below."""


METHODS: dict[str, MethodSpec] = {
    "autoencoder": MethodSpec(
        AutoencoderConfig,
        Autoencoder,
        "denoising autoencoder: mask 25% of the input (or add Gaussian noise), decode the clean "
        "input from the pooled embedding alone (MSE); the oldest baseline",
        "Vincent et al. 2008, ICML (doi:10.1145/1390156.1390294)",
        modalities=("image",),  # those whose Modality.decoder gives one
    ),
    "simclr": MethodSpec(
        SimCLRConfig,
        SimCLR,
        "contrastive: two augmented views, projection head, NT-Xent over in-batch negatives",
        "Chen et al. 2020, arXiv:2002.05709",
    ),
    "mocov2": MethodSpec(
        MoCoV2Config,
        MoCoV2,
        "contrastive: momentum key encoder, MLP head, InfoNCE against a queue of past keys (v2)",
        "Chen et al. 2020, arXiv:2003.04297",
    ),
    "mocov3": MethodSpec(
        MoCoV3Config,
        MoCoV3,
        "contrastive: momentum encoder, projector + predictor, symmetric in-batch InfoNCE; ViTs",
        "Chen et al. 2021, arXiv:2104.02057",
    ),
    "byol": MethodSpec(
        BYOLConfig,
        BYOL,
        "non-contrastive: online predictor regresses an EMA target's projection of the other view",
        "Grill et al. 2020, arXiv:2006.07733",
    ),
    "dino": MethodSpec(
        DINOConfig,
        DINO,
        "self-distillation: multi-crop student matches a centred, sharpened EMA teacher",
        "Caron et al. 2021, arXiv:2104.14294",
    ),
    "simsiam": MethodSpec(
        SimSiamConfig,
        SimSiam,
        "non-contrastive: shared encoder, predictor, stop-gradient, negative cosine",
        "Chen & He 2021, arXiv:2011.10566",
    ),
    "barlow": MethodSpec(
        BarlowTwinsConfig,
        BarlowTwins,
        "redundancy reduction: cross-correlation of two views' embeddings pushed to the identity",
        "Zbontar et al. 2021, arXiv:2103.03230",
    ),
    "vicreg": MethodSpec(
        VICRegConfig,
        VICReg,
        "variance-invariance-covariance: MSE between views, std hinge, decorrelated dimensions",
        "Bardes et al. 2021, arXiv:2105.04906",
    ),
    "rotation": MethodSpec(
        RotationConfig,
        RotationPrediction,
        "pretext: classify the rotation (0/90/180/270°) applied to each image (RotNet)",
        "Gidaris et al. 2018, arXiv:1803.07728",
    ),
    "jigsaw": MethodSpec(
        JigsawConfig,
        Jigsaw,
        "pretext: shuffle a 3×3 grid of tiles, classify the permutation from the tile features",
        "Noroozi & Favaro 2016, arXiv:1603.09246",
    ),
    "colorization": MethodSpec(
        ColorizationConfig,
        Colorization,
        "pretext: predict the colours (ab bins) of an image from its lightness; colour data only",
        "Zhang et al. 2016, arXiv:1603.08511",
        needs_color=True,
        encoder_inputs=lightness_inputs,
    ),
    "mae": MethodSpec(
        MAEConfig,
        MAE,
        "masked image modelling: ViT encodes the visible 25% of patches, a light decoder "
        "reconstructs the rest (per-patch-normalised pixels)",
        "He et al. 2022, arXiv:2111.06377",
    ),
    "simmim": MethodSpec(
        SimMIMConfig,
        SimMIM,
        "masked image modelling: mask tokens for 60% of the patches, linear head regresses "
        "their raw pixels (L1)",
        "Xie et al. 2022, arXiv:2111.09886",
    ),
    "beit": MethodSpec(
        BEiTConfig,
        BEiT,
        "masked image modelling: predict the visual tokens of ~40% block-masked patches; the "
        "VQ-VAE tokenizer is trained first in the same run (first 20% of steps), then frozen",
        "Bao et al. 2022, arXiv:2106.08254",
    ),
    "mlm": MethodSpec(
        MLMConfig,
        MLM,
        "masked language modelling (BERT): predict 15% selected tokens (80% [MASK], 10% random, "
        "10% kept); dynamic masks, optional whole-word masking",
        "Devlin et al. 2019, arXiv:1810.04805",
        modalities=("text",),
    ),
    "clm": MethodSpec(
        CLMConfig,
        CLM,
        "causal language modelling (GPT): predict each next token; tied output layer; "
        "`selfsup generate` samples text",
        "Radford et al. 2018/2019 (GPT, GPT-2)",
        modalities=("text",),
    ),
    "data2vec": MethodSpec(
        Data2VecConfig,
        Data2Vec,
        "masked prediction of an EMA teacher's averaged top-K layer outputs; images (block "
        "masks), text (BERT masks) and speech (wav2vec 2.0 spans) alike",
        "Baevski et al. 2022, arXiv:2202.03555",
        modalities=("image", "text", "audio"),
    ),
    "wav2vec2": MethodSpec(
        Wav2Vec2Config,
        Wav2Vec2,
        "speech: mask ~half the latent frames in spans of 10, pick each one's Gumbel-quantized "
        "code among 100 distractors from the context (contrastive + codebook diversity)",
        "Baevski et al. 2020, arXiv:2006.11477",
        modalities=("audio",),
    ),
    "hubert": MethodSpec(
        HuBERTConfig,
        HuBERT,
        "speech: mask ~half the latent frames in spans of 10, predict each hidden frame's "
        "k-means unit (100 clusters of MFCC+deltas, fitted online then frozen)",
        "Hsu et al. 2021, arXiv:2106.07447",
        modalities=("audio",),
    ),
    "clip": MethodSpec(
        CLIPConfig,
        CLIP,
        "image–text pairs: two towers, symmetric InfoNCE over the batch's pairs, learned logit "
        "scale (from 1/0.07, clamped at 100); zero-shot classification and retrieval",
        "Radford et al. 2021, arXiv:2103.00020",
        modalities=("pairs",),
    ),
    "siglip": MethodSpec(
        SigLIPConfig,
        SigLIP,
        "image–text pairs: pairwise sigmoid loss, learned temperature (t'=log 10) and bias "
        "(-10); distributed by passing text features around a ring, no all-gather",
        "Zhai et al. 2023, arXiv:2303.15343",
        modalities=("pairs",),
    ),
    "align": MethodSpec(
        ALIGNConfig,
        ALIGN,
        "image–text pairs: normalised softmax with a learned temperature (from 1.0) and label "
        "smoothing 0.1, for noisy captions",
        "Jia et al. 2021, arXiv:2102.05918",
        modalities=("pairs",),
    ),
    "word2vec": MethodSpec(
        Word2VecConfig,
        Word2Vec,
        "word vectors: skip-gram (or CBOW) with 5 negatives from unigram^0.75, a shrunk "
        "window of 5, subsampling 1e-3; SGD with linear decay; --encoder word-vectors",
        "Mikolov et al. 2013, arXiv:1310.4546",
        modalities=("text",),
    ),
    "ts2vec": MethodSpec(
        TS2VecConfig,
        TS2Vec,
        "series: two overlapping random crops with timestamp masking, hierarchical "
        "contrastive loss (instance-wise + temporal at every max-pool scale)",
        "Yue et al. 2022, arXiv:2106.10466",
        modalities=("series",),
    ),
    "masked-patches": MethodSpec(
        MaskedPatchesConfig,
        MaskedPatches,
        "series: each channel cut into patches, 40% of them zeroed, a Transformer (patch-tst) "
        "reconstructs their normalised values (MSE on the hidden patches); PatchTST-style",
        "Nie et al. 2023, arXiv:2211.14730",
        modalities=("series",),
    ),
    "videomae": MethodSpec(
        VideoMAEConfig,
        VideoMAE,
        "video: tube masking hides 90% of the space-time cubes (the same spatial positions in "
        "every slice); the encoder sees the rest, a light decoder regresses normalised pixels",
        "Tong et al. 2022, arXiv:2203.12602",
        modalities=("video",),
    ),
    "graphmae": MethodSpec(
        GraphMAEConfig,
        GraphMAE,
        "masked graph autoencoder: [MASK] half the nodes' features, re-mask the codes, a "
        "one-layer GNN decodes them; scaled cosine error on the masked nodes",
        "Hou et al. 2022, arXiv:2205.10803",
        modalities=("graph",),
    ),
    "bgrl": MethodSpec(
        BGRLConfig,
        BGRL,
        "bootstrapped graph latents: edge and feature-column dropping, online GNN + predictor "
        "regress an EMA target GNN's node embeddings of the other view (BYOL on graphs)",
        "Thakoor et al. 2022, arXiv:2102.06514",
        modalities=("graph",),
    ),
    "graphcl": MethodSpec(
        GraphCLConfig,
        GraphCL,
        "graph contrastive: two views by node dropping, subgraphs, edge perturbation or "
        "attribute masking (20%), pooled GNN embeddings, projection head, NT-Xent (tau 0.2)",
        "You et al. 2020, arXiv:2010.13902",
        modalities=("graph",),
    ),
}


def encoder_channels(name: str, info: DataInfo) -> int:
    """How many input channels to build method ``name``'s encoder with for data ``info``."""
    spec = method_spec(name)
    asked = spec.encoder_inputs(info) if spec.encoder_inputs else {}
    return int(asked.get("in_channels", info.channels))


def method_spec(name: str) -> MethodSpec:
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SelfsupError(f"unknown method {name!r}{hint}; known methods: {', '.join(METHODS)}")
    return METHODS[name]


def method_config(name: str, args: dict[str, Any]) -> Any:
    """The method's typed config from the ``method_args`` mapping, unknown keys rejected."""
    return from_dict(method_spec(name).config, args, prefix="method_args.")


def build_method(
    name: str, args: dict[str, Any], encoder: nn.Module | dict[str, nn.Module], info: DataInfo
) -> nn.Module:
    """Method ``name`` with its typed ``args`` around ``encoder``. A method that learns from
    one input takes one encoder; a method of two inputs (image–text pairs) takes a dict of
    named encoders, one per input key, and exposes them as ``method.encoders``."""
    spec = method_spec(name)
    cfg = method_config(name, args)
    try:
        method = spec.build(cfg, encoder, info)
    except ValueError as error:  # a constructor rejecting its arguments (the project's habit)
        raise SelfsupError(f"method_args of {name!r}: {error}") from None
    if missing := missing_members(method):
        raise SelfsupError(f"method {name!r} does not satisfy the Method protocol: no {missing}")
    return method


__all__ = [
    "METHODS",
    "DataInfo",
    "Method",
    "MethodSpec",
    "build_method",
    "encoder_channels",
    "method_config",
    "method_spec",
]
