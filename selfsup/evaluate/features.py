"""Labelled data streamed through a DataLoader: what a frozen or fine-tuned model makes of it.

Evaluation reads a split batch by batch, in index order, so memory holds one batch of inputs
and the (N, D) outputs, never the whole split of inputs: folders of files and shards decode
in loader workers, and variable-length inputs batch through a padding ``collate``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from selfsup.data.dataset import input_key
from selfsup.data.loader import Collate, make_loader


def root_dataset(dataset: Dataset) -> Any:
    """The data set under any ``Subset`` wrappers (it knows its input key and labels)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def dataset_input_key(dataset: Dataset) -> str:
    """The batch key of a data set's inputs (``image``, ``tokens``, ...), through subsets."""
    return input_key(root_dataset(dataset))


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
