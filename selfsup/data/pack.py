"""``selfsup pack``: any data source written as shards on disk, streaming.

    pack("folder:/photos", "/data/photos-64", image_size=64)      # WebDataset tar shards
    pack("text:notes.jsonl", "/data/notes")                        # text: {"txt", "cls"} samples
    pack("fashion-mnist", "/data/fm-npy", format="npy")            # the uint8 .npy shards

This module sits above the sources and the two shard formats (it reads the first and writes
the second), so neither format imports the sources: ``sources`` -> ``shards`` /
``webdataset`` and ``pack`` -> all of them, with no cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from selfsup.data.images import ImageDataset
from selfsup.data.shards import ShardWriter
from selfsup.data.sources import load_images
from selfsup.data.webdataset import WebDatasetWriter, image_samples, text_samples
from selfsup.errors import SelfsupError

Format = Literal["wds", "npy"]
FORMATS: tuple[Format, ...] = ("wds", "npy")

CHUNK_SIZE = 256
"""Images decoded and written per step while packing (what pack holds in memory)."""


def dataset_chunks(
    dataset: ImageDataset, chunk_size: int = CHUNK_SIZE, num_workers: int = 0
) -> Iterator[tuple[Tensor, Tensor]]:
    """(images, labels) of ``dataset`` in order, ``chunk_size`` at a time: slices of an
    in-memory set; batches decoded by the loader (in ``num_workers`` processes) otherwise, so a
    folder is never decoded whole."""
    if dataset.in_memory:
        images, labels = dataset.as_tensor(), dataset.labels()
        for start in range(0, len(dataset), chunk_size):
            yield images[start : start + chunk_size], labels[start : start + chunk_size]
        return
    from selfsup.data.loader import make_loader

    loader = make_loader(
        dataset,
        chunk_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        pin_memory=False,
    )
    for batch in loader:
        yield batch["image"], batch["label"]


def pack(
    spec: str,
    out_dir: str | Path,
    *,
    format: Format = "wds",
    image_size: int | None = None,
    shard_size: int | None = None,
    skip_bad: bool = False,
    num_workers: int = 0,
    chunk_size: int = CHUNK_SIZE,
) -> dict[str, Any]:
    """Write the train and test splits of ``spec`` (any ``--data`` spec) as shards in
    ``out_dir``, streaming; returns the index (also written, last, to index.json).

    ``format="wds"`` (the default) writes WebDataset tar shards, for images and text, read
    back with ``--data wds:OUT``; ``"npy"`` the uint8 image shards read with ``shards:OUT``
    (images only; fastest to read for small images, see docs/scaling.md).
    """
    if format not in FORMATS:
        raise SelfsupError(f"unknown shard format {format!r}; use wds (WebDataset) or npy")
    if chunk_size < 1:
        raise SelfsupError(f"chunk size must be at least 1, got {chunk_size}")
    from selfsup.modalities import modality_of_data

    if modality_of_data(spec).name == "text":
        if format != "wds":
            raise SelfsupError(f"{spec} is text; only --format wds holds text")
        return _pack_texts(spec, out_dir, shard_size)
    train = load_images(spec, "train", skip_bad=skip_bad, image_size=image_size)
    shape = (train.channels, *train.image_size)
    writer: ShardWriter | WebDatasetWriter
    if format == "npy":
        writer = ShardWriter(
            out_dir, channels=train.channels, image_size=train.image_size, shard_size=shard_size
        )
    else:
        writer = WebDatasetWriter(
            out_dir,
            modality="image",
            channels=train.channels,
            image_size=train.image_size,
            shard_size=shard_size,
        )
    for split in ("train", "test"):
        data = (
            train
            if split == "train"
            else load_images(spec, "test", skip_bad=skip_bad, image_size=image_size)
        )
        if (data.channels, data.image_size) != (train.channels, train.image_size):
            raise SelfsupError(
                f"{spec}: the test images ({data.channels}x{data.image_size}) differ from the "
                f"train images ({train.channels}x{train.image_size}); pass --image-size"
            )
        chunks = dataset_chunks(data, chunk_size, num_workers)
        if isinstance(writer, ShardWriter):
            writer.write_split(split, len(data), chunks)
        else:
            written = writer.write_split(split, image_samples(chunks, shape))  # type: ignore[arg-type]
            if written != len(data):
                raise SelfsupError(f"the {split} split gave {written} images, not {len(data)}")
        skipped = len(data.skipped)
    index = writer.finish(source=spec, has_labels=train.has_labels, class_names=train.class_names)
    index["skipped"] = len(train.skipped) + skipped
    return index


def _pack_texts(spec: str, out_dir: str | Path, shard_size: int | None) -> dict[str, Any]:
    """Both splits of the text source ``spec`` as ``{"txt", "cls"}`` WebDataset shards."""
    from selfsup.data.text import load_texts

    writer = WebDatasetWriter(out_dir, modality="text", shard_size=shard_size)
    class_names: list[str] = []
    has_labels = False
    for split in ("train", "test"):
        corpus = load_texts(spec, split)  # type: ignore[arg-type]
        writer.write_split(split, text_samples(corpus.texts, corpus.labels))  # type: ignore[arg-type]
        if split == "train":
            class_names, has_labels = corpus.class_names, corpus.labels is not None
    index = writer.finish(source=spec, has_labels=has_labels, class_names=class_names)
    index["skipped"] = 0
    return index
