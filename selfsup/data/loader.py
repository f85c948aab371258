"""Batches of samples: a DataLoader whose batches are ``{"image": uint8 (B, C, H, W), "label": (B,)}``.

Images stay uint8 all the way to the training device (4x less to copy than float32); the view
generator converts and augments the whole batch there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from selfsup.data.images import Sample
from selfsup.errors import SelfsupError

Collate = Callable[[Sequence[Sample]], dict[str, Tensor]]
"""Samples -> one batch; variable-length inputs need one that pads (and returns a mask)."""


def collate_samples(samples: Sequence[Sample]) -> dict[str, Tensor]:
    """Stack each key of the samples: images (C, H, W) -> (B, C, H, W), labels (a 0-d tensor
    or a Python int) -> (B,)."""
    return {key: torch.stack([torch.as_tensor(s[key]) for s in samples]) for key in samples[0]}


def own_collate(dataset: Dataset[Sample]) -> Collate | None:
    """The ``collate`` a data set (under any ``Subset`` wrappers) brings for its samples, or
    None: samples that are not tensors of one shape (a graph's node ids) batch their own way."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, "collate", None)


def make_loader(
    dataset: Dataset[Sample],
    batch_size: int,
    *,
    sampler: Sampler[int] | None = None,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = True,
    pin_memory: bool | None = None,
    collate: Collate | None = None,
) -> DataLoader[Sample]:
    """A DataLoader of collated uint8 batches.

    Args:
        dataset: any dataset that yields the Sample dict.
        batch_size: images per batch (per process under DDP).
        sampler: an index sampler (the engine passes its resumable one); overrides ``shuffle``.
        shuffle: without a sampler, visit the samples in a fresh random order each epoch,
            drawn from a generator seeded with ``seed`` (so runs repeat exactly).
        num_workers: decoding processes; 0 for in-memory sets, 2-8 for a folder of files.
            Workers persist across epochs.
        drop_last: drop the last incomplete batch (keep True for training: contrastive
            losses and batch norm want full batches; set False to extract features).
        pin_memory: page-locked batches for a faster copy to a GPU; None = when CUDA exists.
        collate: samples -> batch; None uses the data set's own ``collate`` if it has one
            (graphs: a sampled neighbourhood, PyG's batching), else stacks every key
            (`collate_samples`), which needs inputs of one shape: pass a padding one for
            variable-length inputs.
    """
    if batch_size < 1:
        raise SelfsupError(f"batch size must be at least 1, got {batch_size}")
    if num_workers < 0:
        raise SelfsupError(f"num_workers must be 0 or more, got {num_workers}")
    if drop_last and len(dataset) < batch_size:  # type: ignore[arg-type]
        raise SelfsupError(
            f"batch size {batch_size} is larger than the {len(dataset)} samples, "  # type: ignore[arg-type]
            "so no full batch can be made; lower --batch-size"
        )
    # Always a generator of its own: without one, every new iterator draws its workers' base
    # seed from the global RNG, so a run resumed mid-epoch would augment differently.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None and shuffle,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate or own_collate(dataset) or collate_samples,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        generator=generator,
    )
