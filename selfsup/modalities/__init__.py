"""Kinds of data as plug-ins: everything that differs between images, text, audio, ... lives
in one module per modality, behind the ``Modality`` protocol.

    modality = modality_of_data("fashion-mnist")     # the image modality
    dataset = modality.load("fashion-mnist", "train", image_size=32)
    inputs = modality.to_input(encoder)(batch[modality.input_key])

``pretraining``, ``evaluate``, ``cli`` and ``engine`` name no modality: they ask the registry
below which modality owns a data spec (by its prefix before ``:``) or an encoder, and call its
hooks. A new kind of data is a new module here (and its data sources, encoders, views and
methods) plus one line in ``MODALITIES``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from torch import Tensor, nn

from selfsup.errors import SelfsupError

if TYPE_CHECKING:
    from selfsup.config import DataConfig, EvalConfig, RunConfig
    from selfsup.data.info import DataInfo
    from selfsup.recipe import Choice

Split = Literal["train", "test"]
Progress = Callable[[str], None]


class Modality(Protocol):
    """What a kind of data tells the rest of selfsup. Implemented by a plain object per
    modality (``selfsup.modalities.image.IMAGE``); nothing inherits from anything.

    Samples are dicts (``{input_key: tensor, "label": int64 scalar}``); a batch stacks them
    (``collate``), padding variable-length inputs and adding a boolean ``"padding"`` mask where
    the modality has one.
    """

    name: str
    """The modality's name, as methods and encoders declare it (``"image"``)."""
    input_key: str
    """The batch key the encoder's input travels under."""
    sources: dict[str, str]
    """Spec prefix (before ``:``) -> one line for ``selfsup list`` (what it is, how to install it)."""
    default_encoder: str
    """The registered encoder a run uses when it names none."""
    finetune_augment: Callable[[Tensor], Tensor] | None
    """Augmentation of a float input batch while fine-tuning (None: none)."""
    corruptions: tuple[str, ...]
    """The distribution shifts ``corrupted`` knows (image corruptions; text perturbations)."""

    def owns(self, spec: str) -> bool:
        """Whether ``spec`` names a source of this modality: its prefix is one of ``sources``;
        a container of any kind of sample (``wds:`` shards) is owned by what it holds."""
        ...

    def guess(self, spec: str) -> str | None:
        """A hint for a spec no modality owns that looks like this modality's ("did you mean
        folder:PATH?"), or None."""
        ...

    def check_data(self, data: DataConfig) -> None:
        """Raise ``SelfsupError`` for data options this modality cannot use."""
        ...

    def prepare_run(self, data: DataConfig, run_dir: Path) -> None:
        """Once per run, before worker processes start (text trains its tokenizer here)."""
        ...

    def load(self, spec: str, split: Split, *, folder: Path | None, **options: Any) -> Any:
        """One split of the source ``spec``: a map-style dataset of sample dicts with ``name``,
        ``has_labels``, ``class_names``, ``labels()`` and ``in_memory``. ``folder`` is the run
        or export folder (where a tokenizer lives); ``options`` come from ``run_options`` or
        ``eval_options``."""
        ...

    def run_options(self, data: DataConfig) -> dict[str, Any]:
        """``load`` options for pretraining on ``data``."""
        ...

    def eval_options(self, export: dict[str, Any], data: DataConfig | None) -> dict[str, Any]:
        """``load`` options for evaluating an exported encoder (``export`` is its encoder.yaml;
        ``data`` the run's data config when known)."""
        ...

    def data_info(self, dataset: Any, cfg: RunConfig, folder: Path) -> dict[str, Any]:
        """The ``DataInfo`` fields a method needs about the training data."""
        ...

    def fitted_defaults(self, cfg: RunConfig, info: DataInfo) -> list[Choice]:
        """The method options whose right value depends on this data, chosen for it where
        ``cfg`` leaves them unset (image: crop scale and blur from the image size), each with
        its reason (``selfsup.recipe``); empty when nothing depends on the data."""
        ...

    def encoder_inputs(self, info: DataInfo) -> dict[str, Any]:
        """What ``build_encoder`` needs for this data (image: channels and size)."""
        ...

    def export(self, info: DataInfo, folder: Path) -> dict[str, Any]:
        """Write what is exported beside the encoder into ``folder`` (text: tokenizer.json) and
        return the fields encoder.yaml gets: an ``input`` section saying how to feed the
        encoder, and what loading data for it takes (image size; text length)."""
        ...

    def to_input(self, encoder: nn.Module) -> Callable[[Tensor], Tensor]:
        """What turns a batch's ``input_key`` tensor into ``encoder``'s input."""
        ...

    def check_encoder(self, encoder: nn.Module, dataset: Any, spec: str) -> None:
        """Raise ``SelfsupError`` when ``dataset`` cannot feed ``encoder`` (e.g. channels)."""
        ...

    def collate(self, samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        """A batch from samples."""
        ...

    def raw_baseline(
        self,
        train: Any,
        test: Any,
        ev: EvalConfig,
        probes: list[str],
        progress: Progress,
    ) -> list[dict[str, Any]]:
        """Evaluation rows of the raw-input baseline (pixels; TF-IDF) on the labelled splits."""
        ...

    def raw_features(self, train: Any, test: Any, ev: EvalConfig) -> tuple[Tensor, Tensor]:
        """Dense raw-input features, float32 (N, F) and (Q, F), of the labelled splits: the
        raw-input baseline of the protocols that work on any features (few-shot episodes)."""
        ...

    def extra_evaluation(
        self,
        models: dict[str, nn.Module],
        spec: str,
        folder: Path | None,
        options: dict[str, Any],
        ev: EvalConfig,
    ) -> dict[str, list[dict[str, Any]]]:
        """Further results some encoders of this modality earn (a language model's perplexity),
        by file name (``{"perplexity.json": rows}``); empty when none."""
        ...

    def corrupted(self, dataset: Any, kind: str, severity: int, seed: int = 0) -> Any:
        """A labelled data set like ``dataset`` (same samples, labels and order) with every
        input shifted by corruption ``kind`` at ``severity`` 0 (unchanged) .. 5."""
        ...

    def decoder(self, info: DataInfo, embed_dim: int) -> nn.Module | None:
        """A module from the pooled embedding (B, ``embed_dim``) back to the encoder's input as
        ``to_input`` makes it (a float tensor): what the autoencoder reconstructs through. None
        when this data's input is not a float tensor one can regress (tokens, graphs) or no
        decoder has been written for it yet."""
        ...

    def example_input(self, encoder: nn.Module, batch_size: int, seed: int = 0) -> Tensor:
        """A random batch of ``encoder``'s input as ``forward`` takes it (after ``to_input``),
        shaped by the encoder's ``build_args``: for tracing it (ONNX export) and checking."""
        ...

    def tiny_batch(self, batch_size: int, seed: int = 0) -> dict[str, Tensor]:
        """A small random batch as ``collate`` would make it, for tests."""
        ...


def _registry() -> dict[str, Modality]:
    from selfsup.modalities.audio import AUDIO
    from selfsup.modalities.graph import GRAPH
    from selfsup.modalities.image import IMAGE
    from selfsup.modalities.pairs import PAIRS
    from selfsup.modalities.series import SERIES
    from selfsup.modalities.text import TEXT
    from selfsup.modalities.video import VIDEO

    return {m.name: m for m in (IMAGE, TEXT, AUDIO, PAIRS, SERIES, VIDEO, GRAPH)}


MODALITIES: dict[str, Modality] = _registry()
"""Every modality by name: the one registry line a new kind of data adds is in ``_registry``."""


def no_shifts(name: str) -> SelfsupError:
    """The error of ``corrupted`` for a modality whose ``corruptions`` are empty."""
    return SelfsupError(f"the robustness protocol has no distribution shifts for {name} data yet")


def get_modality(name: str) -> Modality:
    """The modality called ``name``; a clear error naming the known ones otherwise."""
    if name not in MODALITIES:
        raise SelfsupError(f"unknown modality {name!r}; known: {', '.join(MODALITIES)}")
    return MODALITIES[name]


def all_sources() -> dict[str, str]:
    """Every data source of every modality: spec prefix -> its line for ``selfsup list``."""
    return {prefix: line for m in MODALITIES.values() for prefix, line in m.sources.items()}


def modality_of_data(spec: str) -> Modality:
    """The modality that owns the source ``spec`` names (by the prefix before ``:``, and for
    containers such as ``wds:`` by what they hold)."""
    for modality in MODALITIES.values():
        if modality.owns(spec):
            return modality
    raise SelfsupError(unknown_data(spec))


def unknown_data(spec: str) -> str:
    """The message for a spec naming no source: a modality's guess, else a close name."""
    prefix = spec.partition(":")[0].strip().lower()
    hint = next((h for m in MODALITIES.values() if (h := m.guess(spec)) is not None), None)
    if hint is None:
        close = difflib.get_close_matches(prefix, list(all_sources()), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see `selfsup list`"
    return f"unknown data {spec!r}; {hint} Known: {', '.join(all_sources())}"


def modality_of_encoder(encoder: nn.Module, fallback: Modality | None = None) -> Modality:
    """The modality a registered encoder reads (from its ``build_args``); for any other module,
    ``fallback`` (the data's modality)."""
    from selfsup.encoders import encoder_modality

    name = (getattr(encoder, "build_args", None) or {}).get("name")
    if name is not None:
        return get_modality(encoder_modality(name))
    if fallback is None:
        raise SelfsupError(
            f"cannot tell what data a {type(encoder).__name__} reads: pass data with it"
        )
    return fallback


def load_data(spec: str, split: Split, *, folder: Path | None = None, **options: Any) -> Any:
    """One split of any source, loaded by the modality that owns it."""
    return modality_of_data(spec).load(spec, split, folder=folder, **options)


__all__ = [
    "MODALITIES",
    "Modality",
    "all_sources",
    "get_modality",
    "load_data",
    "modality_of_data",
    "modality_of_encoder",
    "unknown_data",
]
