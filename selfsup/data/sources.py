"""Choose an image source from a spec string: the registry behind ``--data`` and ``selfsup list``.

Specs:
    digits                  scikit-learn's embedded 8x8 digits
    fashion-mnist           Fashion-MNIST from /usr/share/datasets/fashion-mnist
    fashion-mnist:FOLDER    Fashion-MNIST from the four IDX files in FOLDER
    folder:PATH             a tree of image files (see ``selfsup.data.folder``)
    npz:PATH                a .npz/.npy array file (see ``selfsup.data.arrays``)
    openclipart[:FOLDER]    colour clip art rendered from SVG (see ``selfsup.data.openclipart``)
    shards:PATH             a folder written by ``selfsup pack --format npy`` (``selfsup.data.shards``)
    wds:PATH                WebDataset tar shards: ``selfsup pack``'s, img2dataset's, a brace
                            pattern (see ``selfsup.data.webdataset``)
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from selfsup.data import idx
from selfsup.data.arrays import load_array_file
from selfsup.data.folder import FolderImageDataset
from selfsup.data.images import ImageDataset, TensorImageDataset, resize_images
from selfsup.data.openclipart import openclipart_folder
from selfsup.data.shards import ShardDataset
from selfsup.data.webdataset import WebDatasetImages
from selfsup.errors import SelfsupError

Split = Literal["train", "test"]

DATASETS: dict[str, str] = {
    "digits": (
        "scikit-learn's handwritten digits: 1,797 grayscale 8x8 images, 10 classes, embedded in "
        "scikit-learn (stratified split, seed 0: 1,257 train / 540 test)"
    ),
    "fashion-mnist": (
        "Fashion-MNIST: 60,000 train + 10,000 test grayscale 28x28 clothing images, 10 classes; "
        "`sudo apt-get install dataset-fashion-mnist`, or fashion-mnist:FOLDER holding the 4 IDX files"
    ),
    "folder": (
        "your own images, folder:PATH: png/jpg/bmp/gif/webp/tiff files, class subfolders give "
        "labels (flat = unlabelled); ~20% go to test by a hash of the path"
    ),
    "npz": (
        "your own arrays, npz:PATH: a .npz/.npy with images (N,H,W[,C]) uint8 or float in [0,1] "
        "and optional labels; test from x_test or a seeded 80/20 split"
    ),
    "openclipart": (
        "openclipart: ~7,500 colour clip-art drawings, 22 categories, rendered once from SVG "
        "(64 px or --image-size); `sudo apt-get install openclipart-svg librsvg2-bin`"
    ),
    "shards": (
        "data larger than memory, shards:PATH: uint8 .npy shards written by `selfsup pack "
        "--format npy`, read from disk sample by sample, shuffled a window of shards at a time"
    ),
    "wds": (
        "WebDataset tar shards, wds:PATH: images or text from `selfsup pack SOURCE PATH`, an "
        "img2dataset folder, or wds:/data/train-{00000..00009}.tar; read like shards:"
    ),
}
"""Every source ``load_images`` knows, with a one-line description for ``selfsup list``."""

_USAGE = (
    "digits, fashion-mnist[:FOLDER], folder:PATH, npz:PATH, openclipart[:FOLDER], shards:PATH, "
    "wds:PATH"
)

DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0


def load_images(
    spec: str,
    split: Split = "train",
    *,
    skip_bad: bool = False,
    image_size: int | None = None,
) -> ImageDataset:
    """Load one split of the image source that ``spec`` names (see ``DATASETS``).

    Args:
        spec: ``digits``, ``fashion-mnist``, ``fashion-mnist:FOLDER``, ``folder:PATH`` or
            ``npz:PATH``.
        split: ``train`` or ``test``; each source documents how it splits.
        skip_bad: folder only: drop unreadable image files (listed in ``dataset.skipped``)
            instead of stopping; the other sources have no files to skip.
        image_size: resize every image to this square size (shorter side to ``image_size``,
            centre crop); None keeps the source's size (a folder takes its first image's).

    Raises:
        SelfsupError: unknown spec, missing or malformed data; the message says how to fix it.
    """
    if split not in ("train", "test"):
        raise SelfsupError(f"unknown split {split!r}; use 'train' or 'test'")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise SelfsupError(f"image size must be a positive integer, got {image_size!r}")
    name, colon, argument = spec.partition(":")
    name = name.strip().lower()
    argument = argument.strip()

    if name == "digits" and colon:
        raise SelfsupError(f"digits takes no argument, got {spec!r}; use --data digits")
    if name == "digits":
        images, labels = _digits(split)
        return _in_memory(images, labels, spec, split, image_size, class_names=None)
    if name == "fashion-mnist":
        folder = Path(argument).expanduser() if argument else None
        images, labels = idx.load_fashion_mnist(folder, split)
        return _in_memory(images, labels, spec, split, image_size, class_names=idx.CLASS_NAMES)
    if name in ("folder", "npz"):
        if not argument:
            raise SelfsupError(f"{name} needs a path: --data {name}:PATH")
        path = Path(argument).expanduser()
        if name == "folder":
            return FolderImageDataset(
                path, split, skip_bad=skip_bad, image_size=image_size, name=spec
            )
        images, maybe_labels, class_names = load_array_file(path, split)
        return _in_memory(images, maybe_labels, spec, split, image_size, class_names=class_names)
    if name == "openclipart":
        # rendered at image_size, so the folder needs no resizing
        rendered = openclipart_folder(argument, image_size)
        return FolderImageDataset(rendered, split, skip_bad=skip_bad, name=spec)
    if name == "shards":  # skip_bad: a pack holds no files to skip
        if not argument:
            raise SelfsupError(
                "shards needs a path: --data shards:PATH (a folder from `selfsup pack`)"
            )
        return ShardDataset(Path(argument).expanduser(), split, image_size=image_size, name=spec)
    if name == "wds":
        return WebDatasetImages(argument, split, image_size=image_size, name=spec)
    raise SelfsupError(_unknown(spec, name))


def guess_image_spec(spec: str) -> str | None:
    """A hint for a spec that names no source but an image folder, a pack or an array file."""
    path = Path(spec).expanduser()
    if path.is_dir():
        index = path / "index.json"
        prefix = "folder"
        if index.is_file():
            prefix = (
                "wds" if "selfsup-webdataset" in index.read_text(errors="replace") else "shards"
            )
        elif any(path.glob("*.tar")):
            prefix = "wds"
        return f"did you mean {prefix}:{spec}?"
    if path.is_file() and path.suffix.lower() == ".tar":
        return f"did you mean wds:{spec}?"
    if path.is_file() and path.suffix.lower() in (".npz", ".npy"):
        return f"did you mean npz:{spec}?"
    return None


def _unknown(spec: str, name: str) -> str:
    """The message for a spec naming no source: a close name, or the right prefix for a path."""
    hint = guess_image_spec(spec)
    if hint is None:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see `selfsup list`"
    return f"unknown data {spec!r}; {hint} Known: {_USAGE}"


def _in_memory(
    images: Tensor,
    labels: Tensor | None,
    spec: str,
    split: Split,
    image_size: int | None,
    class_names: list[str] | None,
) -> TensorImageDataset:
    if image_size is not None:
        images = resize_images(images, (image_size, image_size))
    return TensorImageDataset(images, labels, name=spec, split=split, class_names=class_names)


@functools.lru_cache(maxsize=1)
def _digits_all() -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """All 1,797 digits as uint8 (N, 1, 8, 8) (0..16 scaled to 0..255), labels, and split indices."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    train, test = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    splits = {"train": torch.from_numpy(np.sort(train)), "test": torch.from_numpy(np.sort(test))}
    return torch.from_numpy(images), torch.from_numpy(labels), splits


def _digits(split: Split) -> tuple[Tensor, Tensor]:
    """One split of digits: a fixed stratified 70/30 split (seed 0), in the original order."""
    images, labels, splits = _digits_all()
    return images[splits[split]], labels[splits[split]]
