"""Fashion-MNIST from its four standard IDX files (gzip-compressed or not).

The IDX format (LeCun et al., the MNIST distribution) is a 4-byte magic number
``0x00 0x00 <dtype> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the raw values in
row-major order. Fashion-MNIST (Xiao et al. 2017) ships images as ``idx3-ubyte``
(N, 28, 28) and labels as ``idx1-ubyte`` (N,): 60,000 for training, 10,000 for test.

Debian/Ubuntu install them with ``sudo apt-get install dataset-fashion-mnist`` into
``/usr/share/datasets/fashion-mnist``; any folder holding the same files works as
``fashion-mnist:FOLDER``. Parsed files are cached per process, keyed by path, size and
modification time, so loading train and test, or loading twice, reads each file once.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from selfsup.errors import SelfsupError

DEFAULT_FOLDER = Path("/usr/share/datasets/fashion-mnist")

CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Standard file stems per split; each may end in ``.gz``, and ``-idx`` may be ``.idx``."""

_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


def _how_to_get() -> str:
    return (
        "install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or "
        "download the four standard files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into a folder and pass "
        "--data fashion-mnist:FOLDER"
    )


def find_file(folder: Path, stem: str) -> Path | None:
    """The file for ``stem`` in ``folder``: raw or ``.gz``, ``-idx`` or ``.idx`` spelling."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem + ".gz", stem, dotted + ".gz", dotted):
        path = folder / name
        if path.is_file():
            return path
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse one unsigned-byte IDX file with ``ndim`` dimensions into a uint8 array.

    Raises SelfsupError naming the file when it is truncated, corrupt, or not ``ndim``-d ubyte.
    """
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw
    except (OSError, EOFError, zlib.error) as e:
        raise SelfsupError(
            f"cannot read {path}: {e}; the file is truncated or corrupt, download it again"
        ) from None
    header = 4 + 4 * ndim
    if len(data) < header or data[0:2] != b"\0\0" or data[2] != _UBYTE or data[3] != ndim:
        found = data[:4].hex() if len(data) >= 4 else f"{len(data)} bytes"
        raise SelfsupError(
            f"{path} is not an IDX file of {ndim}-d unsigned bytes (magic number "
            f"{found}, expected 0000080{ndim}); check the file name and download it again"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise SelfsupError(
            f"{path} is truncated or corrupt: its header says {'x'.join(map(str, dims))} values "
            f"({expected} bytes) but it holds {len(data)} bytes; download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _stat_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=4)
def _load_pair(
    image_key: tuple[str, int, int], label_key: tuple[str, int, int]
) -> tuple[Tensor, Tensor]:
    """Parse and check one images/labels file pair, cached: the keys are (path, size, mtime),
    so a changed file is read again."""
    image_path, label_path = Path(image_key[0]), Path(label_key[0])
    images = read_idx(image_path, 3)  # (N, H, W)
    labels = read_idx(label_path, 1)  # (N,)
    if images.shape[0] != labels.shape[0]:
        raise SelfsupError(
            f"{image_path} holds {images.shape[0]} images but {label_path} holds "
            f"{labels.shape[0]} labels; the two files come from different sets, download them again"
        )
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise SelfsupError(
            f"{label_path} has label {int(labels.max())}, but Fashion-MNIST has "
            f"{len(CLASS_NAMES)} classes (0-9); the file is corrupt, download it again"
        )
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_fashion_mnist(
    folder: Path | None = None, split: Literal["train", "test"] = "train"
) -> tuple[Tensor, Tensor]:
    """Images uint8 (N, 1, 28, 28) and labels int64 (N,) of one split, from ``folder``
    (default ``/usr/share/datasets/fashion-mnist``).

    The tensors are shared with the cache: don't modify them in place.
    """
    folder = DEFAULT_FOLDER if folder is None else folder
    if not folder.is_dir():
        raise SelfsupError(f"Fashion-MNIST folder {folder} does not exist; {_how_to_get()}")
    image_stem, label_stem = FILES[split]
    paths = [find_file(folder, image_stem), find_file(folder, label_stem)]
    missing = [stem for stem, p in zip((image_stem, label_stem), paths, strict=True) if p is None]
    if missing:
        raise SelfsupError(
            f"Fashion-MNIST {split} files not found in {folder} "
            f"(missing {' and '.join(m + '[.gz]' for m in missing)}); {_how_to_get()}"
        )
    image_path, label_path = paths
    assert image_path is not None and label_path is not None
    return _load_pair(_stat_key(image_path), _stat_key(label_path))
