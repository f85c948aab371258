"""Images from a NumPy file: ``npz:PATH`` with a ``.npz`` archive or a single ``.npy`` array.

What is read:
    images  under ``images`` or ``x`` (or ``X``), or the archive's only other array;
            (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3 (the channel axis is
            whichever of axes 1 and 3 has 1 or 3 entries; both is ambiguous and an error);
            uint8, integers in 0..255, or floats in [0, 1] (scaled by 255 and rounded).
    labels  optional, under ``labels`` or ``y`` (or ``Y``): integer class indices (N,).
    names   optional, ``class_names``: one string per class.
    test    ``images_test`` / ``x_test`` (+ ``labels_test`` / ``y_test``) when present;
            otherwise a fixed split: a seed-0 permutation puts 20% of the images in test.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from selfsup.errors import SelfsupError

IMAGE_KEYS = ("images", "x", "X")
LABEL_KEYS = ("labels", "y", "Y")
TEST_FRACTION = 0.2
SPLIT_SEED = 0

_LAYOUTS = "(N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3"


def load_array_file(
    path: Path, split: Literal["train", "test"] = "train"
) -> tuple[Tensor, Tensor | None, list[str] | None]:
    """Images uint8 (N, C, H, W), labels int64 (N,) or None, and class names or None, of one split."""
    arrays = _Arrays(path)
    try:
        return _split(path, arrays, split)
    finally:
        arrays.close()


def _split(
    path: Path, arrays: _Arrays, split: Literal["train", "test"]
) -> tuple[Tensor, Tensor | None, list[str] | None]:
    image_key = _first(arrays.keys, IMAGE_KEYS)
    if image_key is None:  # then the one array that is not labels, names or a test set
        known = {*LABEL_KEYS, "class_names"}
        others = [k for k in arrays.keys if k not in known and not k.endswith("_test")]
        if len(others) != 1:
            raise SelfsupError(
                f"{path} holds arrays {', '.join(arrays.keys) or '(none)'}: name the images 'images' "
                "or 'x' (and the labels 'labels' or 'y'), e.g. np.savez(path, images=x, labels=y)"
            )
        image_key = others[0]
    label_key = _first(arrays.keys, LABEL_KEYS)
    class_names = _class_names(path, arrays)

    test_image_key = _first(arrays.keys, tuple(k + "_test" for k in IMAGE_KEYS))
    if test_image_key is not None:  # the file brings its own test set
        if split == "test":
            image_key = test_image_key
            label_key = _first(arrays.keys, tuple(k + "_test" for k in LABEL_KEYS))
        images = _images(path, image_key, arrays.get(image_key))
        return images, _labels(path, label_key, arrays, image_key, len(images)), class_names

    images = _images(path, image_key, arrays.get(image_key))
    n = images.shape[0]
    labels = _labels(path, label_key, arrays, image_key, n)
    permutation = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = int(round(TEST_FRACTION * n))
    chosen = permutation[:n_test] if split == "test" else permutation[n_test:]
    index = torch.from_numpy(np.sort(chosen))
    return images[index], (labels[index] if labels is not None else None), class_names


class _Arrays:
    """The arrays of a .npz (each read on first use) or the one array of a .npy (as "images")."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise SelfsupError(f"array file {path} does not exist; check the path after npz:")
        self.path = path
        with path.open("rb") as f:
            magic = f.read(6)
        if not (magic.startswith(b"PK") or magic == b"\x93NUMPY"):
            raise SelfsupError(
                f"{path} is not a .npz or .npy file (it starts with {magic!r}); "
                "save the arrays with np.savez or np.save"
            )
        try:
            loaded = np.load(path, allow_pickle=False)
        except ValueError as e:
            if "allow_pickle" in str(e):
                raise SelfsupError(
                    f"{path} holds Python objects, not plain arrays; save numeric arrays with np.savez"
                ) from None
            raise self._unreadable(e) from None
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise self._unreadable(e) from None
        self._npz: np.lib.npyio.NpzFile | None = None
        if isinstance(loaded, np.ndarray):
            self._array: np.ndarray | None = loaded
            self.keys = ["images"]
        else:
            self._array, self._npz = None, loaded
            self.keys = list(loaded.files)

    def close(self) -> None:
        if self._npz is not None:
            self._npz.close()

    def _unreadable(self, e: BaseException) -> SelfsupError:
        return SelfsupError(
            f"cannot read {self.path} as .npz/.npy ({e}); save it with np.savez or np.save"
        )

    def get(self, key: str) -> np.ndarray:
        """One array; a truncated or corrupt member is a SelfsupError naming the file and key."""
        if self._npz is None:
            assert self._array is not None
            return self._array
        try:
            return self._npz[key]
        except Exception as e:  # numpy and zipfile raise many types on a damaged member
            raise SelfsupError(
                f"cannot read array {key!r} of {self.path} ({e}); save the file again"
            ) from None


def _first(keys: list[str], candidates: tuple[str, ...]) -> str | None:
    return next((k for k in candidates if k in keys), None)


def _images(path: Path, key: str, x: np.ndarray) -> Tensor:
    """Check and convert an image array to uint8 (N, C, H, W)."""
    where = f"{path}[{key!r}]"
    if x.ndim == 3:
        x = x[:, None]  # (N, 1, H, W)
    elif x.ndim == 4:
        first, last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
        if first and last:
            raise SelfsupError(
                f"{where} has shape {x.shape}, which is ambiguous: both (N, C, H, W) and (N, H, W, C) "
                f"fit; accepted layouts are {_LAYOUTS} on exactly one of axes 1 and 3"
            )
        if not (first or last):
            raise SelfsupError(
                f"{where} has shape {x.shape} with no axis of 1 or 3 channels; accepted layouts are {_LAYOUTS}"
            )
        if last:
            x = x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    else:
        raise SelfsupError(f"{where} has shape {x.shape}; accepted image layouts are {_LAYOUTS}")
    if x.shape[0] == 0:
        raise SelfsupError(f"{where} holds no images (shape {x.shape}); save a non-empty array")
    return torch.from_numpy(_to_uint8(where, x))


def _to_uint8(where: str, x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        lo, hi = float(np.min(x)), float(np.max(x))
        if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
            raise SelfsupError(
                f"{where} holds floats from {lo:g} to {hi:g}; float images must lie in [0, 1] "
                "(divide 0..255 data by 255) or be saved as uint8"
            )
        return np.ascontiguousarray(np.rint(x * 255.0).astype(np.uint8))
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(np.min(x)), int(np.max(x))
        if lo < 0 or hi > 255:
            raise SelfsupError(
                f"{where} holds integers from {lo} to {hi}; integer images must lie in 0..255 "
                "(save them as uint8) or be floats in [0, 1]"
            )
        return np.ascontiguousarray(x.astype(np.uint8))
    raise SelfsupError(f"{where} has dtype {x.dtype}; save images as uint8 or as floats in [0, 1]")


def _labels(path: Path, key: str | None, arrays: _Arrays, image_key: str, n: int) -> Tensor | None:
    """Check labels against the ``n`` images they belong to; None when there are none."""
    if key is None:
        return None
    y = arrays.get(key)
    where = f"{path}[{key!r}]"
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise SelfsupError(
            f"{where} has shape {y.shape} and dtype {y.dtype}; labels must be a 1-D integer array "
            "of class indices (convert one-hot labels with argmax)"
        )
    if y.shape[0] != n:
        raise SelfsupError(
            f"{where} has {y.shape[0]} labels but {path}[{image_key!r}] has {n} images; "
            "save one label per image"
        )
    if y.size and int(y.min()) < 0:
        raise SelfsupError(
            f"{where} has negative label {int(y.min())}; labels must be class indices 0..K-1"
        )
    return torch.from_numpy(y.astype(np.int64))


def _class_names(path: Path, arrays: _Arrays) -> list[str] | None:
    if "class_names" not in arrays.keys:
        return None
    names = arrays.get("class_names")
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise SelfsupError(
            f"{path}['class_names'] must be a 1-D array of strings, got {names.dtype} {names.shape}"
        )
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
