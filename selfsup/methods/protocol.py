"""What every method offers the engine, and what the engine tells a method when building it.

A method is an ``nn.Module`` that satisfies ``Method`` structurally; it does not inherit
from anything of ours. It never touches the optimizer, the devices or files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from torch import Tensor, nn


@dataclass(frozen=True)
class DataInfo:
    """What a method needs to know about its inputs to build views and heads.

    Image data fill ``channels`` and ``image_size``; text data (``modality="text"``, batches
    ``{"tokens": int64 (B, L)}``) fill ``vocab_size``, ``max_length`` and ``tokenizer``, and
    leave the image fields 0.
    """

    channels: int = 0
    image_size: int = 0
    channels_last: bool = True
    steps_per_epoch: int | None = None
    """Optimizer steps in one pass over the data (all processes together); the engine sets it.
    Methods with per-epoch rules (DINO freezes its last layer for the first epoch) fall back
    to something documented when it is None."""
    modality: Literal["image", "text"] = "image"
    vocab_size: int = 0
    max_length: int = 0
    """Tokens per sample, [CLS] and [SEP] included; batches are padded to it."""
    tokenizer: Any = None
    """The run's ``tokenizers.Tokenizer`` (text only): special ids and whole-word starts."""


@runtime_checkable
class Method(Protocol):
    encoder: nn.Module
    """The part that is exported and evaluated."""

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One step's loss (key ``"loss"``) and metrics; key ``"features"`` (B, D), detached
        encoder outputs of one view, feeds the collapse monitor, as does the optional key
        ``"embedding"`` (B, K), the detached head output the loss sees."""
        ...

    def on_step_end(self, progress: float) -> None:
        """After each optimizer step; ``progress`` in [0, 1] drives EMA and temperature schedules."""
        ...


def missing_members(obj: Any) -> list[str]:
    """The members of ``Method`` that ``obj`` lacks (empty when it is a method).

    ``isinstance(obj, Method)`` cannot answer this for an ``nn.Module``: from Python 3.12 on,
    runtime protocols look attributes up statically and miss submodules such as ``encoder``,
    which ``nn.Module`` keeps in ``_modules``.
    """
    missing = [] if isinstance(getattr(obj, "encoder", None), nn.Module) else ["encoder"]
    missing += [n for n in ("training_step", "on_step_end") if not callable(getattr(obj, n, None))]
    return missing
