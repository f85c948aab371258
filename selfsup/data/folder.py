"""A folder tree of image files, decoded with Pillow inside ``__getitem__`` (so in loader workers).

Layout:
    PATH/cat/001.jpg, PATH/dog/002.png, ...  -> labelled: the first-level subfolder is the class
                                                (class names sorted; deeper folders belong to it)
    PATH/001.jpg, PATH/002.png, ...          -> unlabelled (every label is -1)

Decisions made once, at construction, from the files' headers (no pixel decoding; every
file up to ``HEADER_SCAN_LIMIT``, an even sample beyond):

* colour: grayscale ("L", 1 channel) when every scanned image is grayscale, else "RGB"
  (3 channels; alpha is dropped, palette images count as colour; 16-bit grayscale keeps
  its top 8 bits);
* size: ``image_size`` gives S x S; without it the first image's (H, W) (in sorted path
  order) is the size of the whole set. An image of another size is scaled until it covers
  the target and centre-cropped ("resize the shorter side, crop the rest"), so a folder of
  mixed sizes works but is best given an explicit ``image_size``;
* split: a file is in "test" when a hash of its relative path falls in the lowest 20%:
  the same files on every run and machine, and adding files never moves existing ones.

A file Pillow cannot read stops construction (header) or the loader (pixels) with a
SelfsupError naming it. With ``skip_bad=True`` every file of the split is fully decoded at
construction (~0.1 ms per small PNG), the unreadable ones are dropped and listed in
``skipped``, and their count is logged as a warning.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from selfsup.data.images import UNLABELLED, ImageDataset, Sample, cover_crop_box
from selfsup.data.split import in_test_split
from selfsup.errors import SelfsupError, UnreadableFileError

logger = logging.getLogger("selfsup")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""File endings read as images, compared case-insensitively."""

TEST_FRACTION = 0.2
"""Share of files that the path hash puts in the test split."""

HEADER_SCAN_LIMIT = 20_000
"""At most this many headers are opened to choose the colour mode (~25 us each)."""

SKIP_HINT = "pass --skip-bad to skip unreadable files"

_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ORIENTATION = 0x0112  # EXIF tag; values 5-8 swap width and height
_SWAPPED_ORIENTATIONS = frozenset({5, 6, 7, 8})


class UnreadableImageError(UnreadableFileError):
    """An image file that Pillow cannot open or decode; one line even from a loader worker."""


def list_image_files(root: Path) -> list[str]:
    """Relative POSIX paths of every image file under ``root``, sorted; hidden entries skipped."""
    return list_files(root, IMAGE_EXTENSIONS)


def list_files(root: Path, extensions: tuple[str, ...]) -> list[str]:
    """Relative POSIX paths of every file under ``root`` whose name ends (in any case) with one
    of ``extensions``, sorted; hidden entries skipped, links followed, loops cut."""
    found: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames.clear()
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(root)
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(extensions):
                found.append((rel_dir / f).as_posix())
    return sorted(found)


def peek_image(path: Path) -> tuple[str, tuple[int, int]]:
    """An image's mode and upright (H, W), from its header only."""
    with Image.open(path) as im:
        w, h = im.size
        # Pillow reads a PNG's EXIF only after decoding it; JPEG/WebP/TIFF carry it in the header.
        if im.format != "PNG" and im.getexif().get(_ORIENTATION, 1) in _SWAPPED_ORIENTATIONS:
            w, h = h, w
        return im.mode, (h, w)


def read_image(path: Path | BinaryIO, mode: Literal["L", "RGB"], size: tuple[int, int]) -> Tensor:
    """Decode one file (or file object) to uint8 (C, H, W): upright (EXIF orientation), in
    ``mode``, and resized to ``size`` = (H, W) by covering it and centre-cropping."""
    height, width = size
    with Image.open(path) as file:
        if file.format == "JPEG":
            file.draft(mode, (width, height))  # decode at a reduced scale that still covers size
        file.load()
        im: Image.Image = file
        if im.getexif().get(_ORIENTATION, 1) != 1:
            from PIL import ImageOps

            im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I"):  # 16/32-bit integers: Pillow's convert would clip at 255
            im = _high_bits_to_l(im)
        elif im.mode == "F":  # 32-bit float: Pillow's convert would turn 0..1 into black
            im = _float_to_l(im)
        im = im.convert(mode)
    if im.size != (width, height):
        box = cover_crop_box(im.width, im.height, size)
        im = im.resize((width, height), Image.Resampling.BILINEAR, box=box)
    array = torch.from_numpy(np.array(im, dtype=np.uint8))  # (H, W) or (H, W, C)
    if array.dim() == 2:
        return array.unsqueeze(0)
    return array.permute(2, 0, 1).contiguous()


def _high_bits_to_l(im: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer) grayscale image as 8-bit "L", keeping its top 8 bits;
    an "I" image whose values all fit in 0..255 is taken as 8-bit already."""
    values = np.asarray(im).astype(np.int64)
    if im.mode.startswith("I;16") or values.max(initial=0) > 255:
        values = values >> 8
    return Image.fromarray(values.clip(0, 255).astype(np.uint8), "L")


def _float_to_l(im: Image.Image) -> Image.Image:
    """A 32-bit float grayscale image as 8-bit "L": values in [0, 1] are scaled by 255 (the
    usual convention), larger ones are taken as 0..255 already; NaN becomes 0."""
    values = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if values.max(initial=0.0) <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.rint(values.clip(0, 255)).astype(np.uint8), "L")


class FolderImageDataset(ImageDataset):
    """One split of a folder of image files; see the module docstring for the rules."""

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "test"] = "train",
        *,
        skip_bad: bool = False,
        image_size: int | None = None,
        name: str | None = None,
    ) -> None:
        """Index ``root`` (header reads only, unless ``skip_bad`` asks to decode every file)."""
        self.root = Path(root).expanduser()
        self.name = name if name is not None else f"folder:{root}"
        self.split = split
        all_files = _check_layout(self.root)

        # Class names come from the whole tree, so train and test agree on them.
        labelled = "/" in all_files[0]
        self.has_labels = labelled
        self.class_names = sorted({f.split("/", 1)[0] for f in all_files}) if labelled else []
        self.num_classes = len(self.class_names)

        # Colour mode and size come from the whole tree too (headers only).
        scan = _scan_headers(self.root, all_files, skip_bad)
        modes, sizes, bad = scan.modes, scan.sizes, scan.bad
        first_size = next(iter(sizes))  # Counter keeps insertion order: the first good file
        self.mode: Literal["L", "RGB"] = "L" if modes <= _GRAY_MODES else "RGB"
        self.channels = 1 if self.mode == "L" else 3
        self.image_size = (image_size, image_size) if image_size is not None else first_size
        if image_size is None and len(sizes) > 1:
            logger.warning(
                "%s holds images of %d different sizes; all are resized and centre-cropped to "
                "%dx%d (the first image's size): pass --image-size to choose",
                self.root,
                len(sizes),
                *self.image_size,
            )

        want_test = split == "test"
        files = [f for f in all_files if in_test_split(f, TEST_FRACTION) == want_test]
        if skip_bad:
            files = self._drop_unreadable(files, bad)
        else:
            self.skipped = []
        if not files:
            raise SelfsupError(
                f"{self.root} has no readable images in the {split} split ({len(all_files)} files, "
                f"~{TEST_FRACTION:.0%} go to test by a hash of the path); add more images"
            )
        self.files = files
        index = {c: i for i, c in enumerate(self.class_names)}
        self._labels = torch.tensor(
            [index[f.split("/", 1)[0]] if labelled else UNLABELLED for f in files],
            dtype=torch.int64,
        )

    def _drop_unreadable(self, files: list[str], bad: set[str]) -> list[str]:
        """Decode every file, keep the good ones, record the others in ``skipped``."""
        good: list[str] = []
        skipped: list[str] = []
        for rel in files:
            if rel not in bad:
                try:
                    read_image(self.root / rel, self.mode, self.image_size)
                    good.append(rel)
                    continue
                except Exception:  # any failure means "unreadable"
                    pass
            skipped.append(str(self.root / rel))
        self.skipped = skipped
        if skipped:
            logger.warning(
                "skipped %d unreadable image file(s) in the %s split of %s (first: %s)",
                len(skipped),
                self.split,
                self.root,
                skipped[0],
            )
        return good

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        path = self.root / self.files[index]
        try:
            image = read_image(path, self.mode, self.image_size)
        except Exception as e:  # Pillow raises many types on bad files
            raise _unreadable(path, e) from None
        return {"image": image, "label": self._labels[index]}

    def labels(self) -> Tensor:
        """Every label, int64 (N,), from the file paths (nothing is decoded); -1 when unlabelled."""
        return self._labels

    def as_tensor(self) -> Tensor:
        """Decode every image into one uint8 (N, C, H, W) tensor: a full pass over the files,
        worth it only for small folders (check ``in_memory`` first)."""
        return torch.stack([self[i]["image"] for i in range(len(self))])


class _HeaderScan(NamedTuple):
    modes: set[str]
    sizes: Counter[tuple[int, int]]
    """(H, W) -> how many scanned files have it, in the order first seen."""
    bad: set[str]


def _scan_headers(root: Path, files: list[str], skip_bad: bool) -> _HeaderScan:
    """Open the headers of ``files`` (an even sample of ``HEADER_SCAN_LIMIT`` beyond that)."""
    scan = _HeaderScan(set(), Counter(), set())
    for i in _scan_indices(len(files)):
        try:
            mode, size = peek_image(root / files[i])
        except Exception as e:  # Pillow raises many types on bad files
            if not skip_bad:
                raise _unreadable(root / files[i], e) from None
            scan.bad.add(files[i])
            continue
        scan.modes.add(mode)
        scan.sizes[size] += 1
    if not scan.sizes:
        raise SelfsupError(
            f"none of the {len(files)} image files in {root} can be read; "
            f"check that they are images (the first is {files[0]})"
        )
    return scan


def _unreadable(path: Path, error: BaseException) -> UnreadableImageError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return UnreadableImageError(f"cannot read image {path} ({reason}); {SKIP_HINT}")


def _scan_indices(n: int) -> list[int]:
    if n <= HEADER_SCAN_LIMIT:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, HEADER_SCAN_LIMIT).round().astype(int).tolist()))


def _check_layout(root: Path) -> list[str]:
    """Every image file under ``root``, after checking the folder exists, holds images, and
    is either all class subfolders or all flat."""
    if not root.exists():
        raise SelfsupError(f"folder {root} does not exist; check the path after folder:")
    if not root.is_dir():
        hint = (
            "use npz:PATH for arrays"
            if root.suffix.lower() in (".npz", ".npy")
            else "give the folder that holds the images"
        )
        raise SelfsupError(f"{root} is a file, not a folder; {hint}")
    files = list_image_files(root)
    if not files:
        raise SelfsupError(
            f"no image files found in {root} (looked for {', '.join(IMAGE_EXTENSIONS)}, any case, "
            "in the folder and its subfolders); point folder:PATH at the folder that holds them"
        )
    flat = sum("/" not in f for f in files)
    if 0 < flat < len(files):
        raise SelfsupError(
            f"{root} mixes {flat} images at the top level with {len(files) - flat} in subfolders; "
            "put every image in a class subfolder (labelled) or all at the top level (unlabelled)"
        )
    return files
