"""What a method is told about its data when it is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DataInfo:
    """What a method needs to know about its inputs to build views and heads.

    Image data fill ``channels`` and ``image_size``; text data (``modality="text"``, batches
    ``{"tokens": int64 (B, L)}``) fill ``vocab_size``, ``max_length`` and ``tokenizer``, and
    leave the image fields 0; graph data fill ``node_features``.
    """

    channels: int = 0
    image_size: int = 0
    channels_last: bool = True
    steps_per_epoch: int | None = None
    """Optimizer steps in one pass over the data (all processes together); the engine sets it.
    Methods with per-epoch rules (DINO freezes its last layer for the first epoch) fall back
    to something documented when it is None."""
    modality: str = "image"
    """The name of the data's modality (``selfsup.modalities``)."""
    vocab_size: int = 0
    max_length: int = 0
    """Tokens per sample, [CLS] and [SEP] included; batches are padded to it."""
    tokenizer: Any = None
    """The run's ``tokenizers.Tokenizer`` (text only): special ids and whole-word starts."""
    token_counts: Any = None
    """Text: how often each token id occurs in the training split, int64 (vocab_size,):
    word2vec's subsampling and noise distribution."""
    sample_rate: int = 0
    """Audio: the rate (Hz) every recording was resampled to."""
    max_samples: int = 0
    """Audio: samples per (cut or padded) recording."""
    node_features: int = 0
    """Features per node (graph only: batches ``{"graph": PyG Data}``)."""
