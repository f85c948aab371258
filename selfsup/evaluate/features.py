"""Frozen features of a labelled set, streamed through a DataLoader: memory stays bounded by
the features (N, D), never by the decoded inputs, for folders, shards and variable-length data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from selfsup.errors import SelfsupError


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def batches(
    dataset: Dataset[Any],
    batch_size: int,
    *,
    collate: Callable[[list[dict[str, Tensor]]], dict[str, Tensor]] | None = None,
    num_workers: int = 0,
) -> Iterator[dict[str, Tensor]]:
    """Every sample of ``dataset`` once, in order, in batches (the last one may be short)."""
    from selfsup.data.loader import collate_samples

    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        collate_fn=collate or collate_samples,
    )
    yield from loader


def input_key_of(dataset: Any) -> str:
    """The batch key a dataset carries its input under (``ImageDataset``: image, text: tokens)."""
    from selfsup.modalities import modality_of_data

    key = getattr(dataset, "input_key", None)
    if key is None:
        key = modality_of_data(getattr(dataset, "name", "")).input_key
    return key


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    data: Tensor | Dataset[Any],
    batch_size: int = 512,
    device: str | None = None,
    *,
    to_input: Callable[[Tensor], Tensor] | None = None,
    num_workers: int = 0,
) -> Tensor:
    """Frozen features (N, D), float32, in eval mode, of a dataset of samples (streamed
    through a DataLoader) or of one tensor of raw inputs (uint8 images (N, C, H, W), int64
    token ids (N, L)).

    ``to_input`` turns a raw batch into the encoder's input; None asks the encoder's
    modality (images are scaled and normalised to the channels the encoder was built for).
    """
    device = device or default_device()
    encoder = encoder.to(device).eval()
    if to_input is None:
        to_input = input_fn(encoder, None if isinstance(data, Tensor) else data)
    if isinstance(data, Tensor):
        chunks: Any = (
            data[start : start + batch_size] for start in range(0, len(data), batch_size)
        )
    else:
        key = input_key_of(data)
        chunks = (b[key] for b in batches(data, batch_size, num_workers=num_workers))
    out = [encoder(to_input(x.to(device))).float().cpu() for x in chunks]
    return torch.cat(out) if out else torch.empty(0, getattr(encoder, "embed_dim", 0))


def input_fn(encoder: nn.Module, dataset: Any = None) -> Callable[[Tensor], Tensor]:
    """What turns a raw batch into ``encoder``'s input: its modality's rule for a registered
    encoder, else the rule of ``dataset``'s modality, else the batch as it is."""
    from selfsup.modalities import modality_of_data, modality_of_encoder

    fallback = None
    if dataset is not None and getattr(dataset, "name", None):
        fallback = modality_of_data(dataset.name)
    try:
        return modality_of_encoder(encoder, fallback).to_input(encoder)
    except SelfsupError:
        return lambda x: x  # a user's module, fed float tensors or ids as they are


def stream_inputs(dataset: Dataset[Any], key: str, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Every raw input under ``key`` (N, ...) and every label (N,) of a dataset, batch by batch
    (for raw-input baselines, whose features are the inputs themselves)."""
    xs, ys = [], []
    for batch in batches(dataset, batch_size):
        xs.append(batch[key])
        ys.append(batch["label"])
    if not xs:
        raise SelfsupError(f"{getattr(dataset, 'name', 'the data set')} holds no samples")
    return torch.cat(xs), torch.cat(ys)


def texts_and_labels(dataset: Any) -> tuple[list[str], Tensor]:
    """The raw texts and labels of a text dataset, or of a ``Subset`` of one."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        texts, labels = texts_and_labels(dataset.dataset)
        keep = list(dataset.indices)
        return [texts[i] for i in keep], labels[torch.as_tensor(keep, dtype=torch.long)]
    return dataset.texts(), dataset.labels()


def labels_of(dataset: Any) -> Tensor:
    """Every label (N,) of a dataset or a ``Subset`` of one, without decoding an input."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    return dataset.labels()
