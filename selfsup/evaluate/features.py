"""Labelled data streamed through a DataLoader: what a frozen or fine-tuned model makes of it.

Evaluation reads a split batch by batch, in index order, so memory holds one batch of inputs
and the (N, D) outputs, never the whole split of inputs: folders of files and shards decode
in loader workers, and variable-length inputs batch through a padding ``collate``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from selfsup.data.loader import Collate, make_loader
from selfsup.errors import SelfsupError


def root_dataset(dataset: Dataset) -> Any:
    """The data set under any ``Subset`` wrappers (it knows its input key and labels)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def dataset_input_key(dataset: Dataset) -> str:
    """The batch key of a data set's inputs (``image``, ``tokens``, ...), through subsets:
    the data set's own ``input_key``, else its source's modality's."""
    from selfsup.modalities import modality_of_data

    root = root_dataset(dataset)
    key = getattr(root, "input_key", None)
    return key if key is not None else modality_of_data(getattr(root, "name", "")).input_key


def dataset_labels(dataset: Dataset) -> Tensor:
    """Every sample's label, int64 (N,), in index order, through ``Subset`` wrappers.

    Read from the data set's own ``labels()`` when it has one (nothing is decoded), else from
    every sample's ``"label"``: give such data sets a ``labels()`` if their samples are slow
    to read.
    """
    if isinstance(dataset, Subset):
        indices = torch.as_tensor(list(dataset.indices), dtype=torch.long)  # (N,)
        return dataset_labels(dataset.dataset)[indices]
    own = getattr(dataset, "labels", None)
    if callable(own):
        return torch.as_tensor(own()).long().reshape(-1)
    return torch.tensor([int(dataset[i]["label"]) for i in range(len(dataset))])  # type: ignore[arg-type]


def texts_and_labels(dataset: Dataset) -> tuple[list[str], Tensor]:
    """The raw texts (in index order) and labels of a text data set, through subsets."""
    if isinstance(dataset, Subset):
        texts, labels = texts_and_labels(dataset.dataset)
        keep = list(dataset.indices)
        return [texts[i] for i in keep], labels[torch.as_tensor(keep, dtype=torch.long)]
    return dataset.texts(), dataset_labels(dataset)  # type: ignore[attr-defined]


@torch.no_grad()
def map_batches(
    fn: Callable[[Tensor], Tensor],
    dataset: Dataset,
    *,
    batch_size: int,
    input_key: str,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    collate: Collate | None = None,
) -> tuple[Tensor, Tensor | None]:
    """``fn`` of every batch's input, in index order, without gradient.

    Args:
        fn: (B, ...) input batch on ``device`` -> (B, ...) output, e.g. an encoder's (B, D)
            features or a classifier's (B, K) logits; the caller sets eval mode and autocast.
        dataset: map-style, yielding ``{input_key: tensor, "label": int, ...}`` samples.
        batch_size: samples per batch (the last batch may be smaller); 256-1024 suits
            feature extraction on a CPU.
        input_key: the batch key ``fn`` reads (``image``, ``tokens``, ...).
        device: where ``fn`` runs.
        num_workers: loader processes that decode; 0 for in-memory sets, 2-8 for files.
        collate: samples -> batch; None stacks them (inputs of one shape).

    Returns:
        (N, ...) float32 outputs on the CPU, and (N,) int64 labels, or None when the samples
        carry no ``"label"``.
    """
    outputs, labels = [], []
    loader = make_loader(
        dataset,
        batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        collate=collate,
    )
    for batch in loader:
        x = batch[input_key].to(device, non_blocking=True)
        outputs.append(fn(x).float().cpu())  # (B, ...)
        if "label" in batch:
            labels.append(batch["label"].long().reshape(-1))  # (B,)
    out = torch.cat(outputs) if outputs else torch.empty(0)
    return out, (torch.cat(labels) if labels else None)


def stream_inputs(dataset: Dataset, key: str, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Every raw input under ``key`` (N, ...) and every label (N,) of a data set, batch by
    batch (for raw-input baselines, whose features are the inputs themselves)."""
    inputs, labels = map_batches(lambda x: x, dataset, batch_size=batch_size, input_key=key)
    if len(inputs) == 0:
        raise SelfsupError(
            f"{getattr(root_dataset(dataset), 'name', 'the data set')} holds no samples"
        )
    return inputs, labels if labels is not None else dataset_labels(dataset)


def input_fn(encoder: nn.Module, dataset: Any = None) -> Callable[[Tensor], Tensor]:
    """What turns a raw batch into ``encoder``'s input: its modality's rule for a registered
    encoder, else the rule of ``dataset``'s modality, else the batch as it is."""
    from selfsup.modalities import modality_of_data, modality_of_encoder

    fallback = None
    name = getattr(root_dataset(dataset), "name", None) if dataset is not None else None
    if name:
        fallback = modality_of_data(name)
    try:
        return modality_of_encoder(encoder, fallback).to_input(encoder)
    except SelfsupError:
        return lambda x: x  # a user's module, fed float tensors or ids as they are


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    data: Tensor | Dataset,
    batch_size: int = 512,
    device: str | None = None,
    *,
    to_input: Callable[[Tensor], Tensor] | None = None,
    input_key: str | None = None,
    num_workers: int = 0,
    collate: Collate | None = None,
) -> Tensor:
    """Frozen features (N, D), float32, in eval mode, of a data set of samples (streamed
    through a DataLoader, so only one batch of inputs is in memory; folders and shards decode
    in ``num_workers`` processes, ``collate`` pads variable-length inputs) or of one tensor of
    raw inputs (uint8 images (N, C, H, W), int64 token ids (N, L)).

    ``to_input`` turns a raw batch into the encoder's input; None asks the encoder's modality
    (images are scaled and normalised to the channels the encoder was built for).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = encoder.to(device).eval()
    if to_input is None:
        to_input = input_fn(encoder, None if isinstance(data, Tensor) else data)
    prepare = to_input

    def features(x: Tensor) -> Tensor:
        return encoder(prepare(x))

    if isinstance(data, Tensor):
        out = [
            features(data[start : start + batch_size].to(device)).float().cpu()
            for start in range(0, len(data), batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, getattr(encoder, "embed_dim", 0))
    key = input_key or dataset_input_key(data)
    out_all, _ = map_batches(
        features,
        data,
        batch_size=batch_size,
        input_key=key,
        device=device,
        num_workers=num_workers,
        collate=collate,
    )
    return out_all if len(out_all) else torch.empty(0, getattr(encoder, "embed_dim", 0))
