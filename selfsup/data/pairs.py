"""Image–text pairs: samples ``{"image": uint8 (3, H, W), "tokens": int64 (L,), "label"}``.

Sources (``PAIR_DATASETS``)::

    pairs:FOLDER            images with a caption file of the same stem beside them
                            (``cat.jpg`` + ``cat.txt``); first-level subfolders are labels
                            when every image sits in one
    pairs:FILE.csv          a manifest: columns ``image`` (a path, relative to the file),
    pairs:FILE.jsonl        ``caption`` and an optional ``label``
    pairs:SHARDS            WebDataset shards (a ``.tar``, a folder of them, a brace pattern)
                            whose samples hold ``jpg``/``png``... + ``txt`` (img2dataset output)
    openclipart-pairs       openclipart drawings captioned from their SVG metadata (see
                            ``openclipart_pairs``), the 22 top-level categories as labels

~20% of the pairs go to test by a hash of the image's relative path (a shard sample's key),
the rule of ``folder:`` sources. A pair is bad when its image has no caption, its caption is
empty, its file is missing or cannot be decoded: a one-line ``SelfsupError`` names it, or with
``skip_bad`` it is dropped and counted. Images are decoded once, at load, to RGB at
``image_size`` (default: the first image's size) and kept in memory, with every caption
tokenized by the run's tokenizer.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.data.folder import IMAGE_EXTENSIONS, TEST_FRACTION, read_image
from selfsup.data.images import UNLABELLED
from selfsup.data.split import in_test_split
from selfsup.errors import SelfsupError

PAIR_DATASETS = {
    "pairs": (
        "pairs:PATH: image–text pairs: a folder of images with same-stem .txt captions, a "
        "CSV/JSONL manifest (image, caption, optional label), or WebDataset shards (jpg/png + txt)"
    ),
    "openclipart-pairs": (
        "openclipart-pairs: ~7,900 clip-art drawings captioned from their SVG metadata (title, "
        "description, keywords) with the 22 category names cut out; 22 categories as labels; "
        "`sudo apt-get install openclipart-svg librsvg2-bin`"
    ),
    "openclipart-pairs-kept": (
        "openclipart-pairs-kept: the same pairs with the category words left in the captions"
    ),
}
OPENCLIPART_SIZE = 32
"""The side openclipart drawings are rendered at when no image size is asked for."""

ImageRef = Path | bytes
"""Where a pair's image is: a file, or the bytes of a shard member."""


@dataclass
class PairCorpus:
    """One split of pairs before decoding: image references, captions and labels."""

    name: str
    split: str
    images: list[ImageRef]
    captions: list[str]
    keys: list[str]
    """What names each pair in messages (a relative path, a shard key)."""
    labels: list[int] | None = None
    class_names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class _Bad:
    """Collects bad pairs: raises on the first one, or counts them all with ``skip_bad``."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.skipped: list[str] = []

    def __call__(self, what: str) -> None:
        if not self.skip_bad:
            raise SelfsupError(f"{what} (pass --skip-bad to skip such pairs)")
        self.skipped.append(what)


def load_pairs(
    spec: str, split: str, skip_bad: bool = False, image_size: int | None = None
) -> PairCorpus:
    """One split of the pair source ``spec`` (see the module docstring), undecoded
    (``image_size``: the side openclipart renders at)."""
    prefix, _, argument = spec.partition(":")
    prefix, argument = prefix.strip().lower(), argument.strip()
    bad = _Bad(skip_bad)
    if prefix in ("openclipart-pairs", "openclipart-pairs-kept"):
        size = image_size or OPENCLIPART_SIZE
        corpus = openclipart_pairs(argument, split, spec, size, keep=prefix.endswith("-kept"))
    elif prefix != "pairs":
        raise SelfsupError(f"unknown pair data {spec!r}; known: {', '.join(PAIR_DATASETS)}")
    elif not argument:
        raise SelfsupError(
            "pairs needs a path: --data pairs:FOLDER, pairs:FILE.csv, pairs:FILE.jsonl or pairs:SHARDS.tar"
        )
    else:
        corpus = _user_pairs(Path(argument).expanduser(), argument, split, spec, bad)
    corpus.skipped = bad.skipped + corpus.skipped
    if not corpus.captions:
        raise SelfsupError(f"{spec} has no pairs in the {split} split; add more pairs")
    return corpus


def _user_pairs(path: Path, argument: str, split: str, spec: str, bad: _Bad) -> PairCorpus:
    if path.suffix.lower() in (".csv", ".jsonl"):
        if not path.is_file():
            raise SelfsupError(f"manifest {path} does not exist; check the path after pairs:")
        rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _jsonl_rows(path)
        return _manifest_pairs(rows, path, split, spec, bad)
    if path.is_dir() and not any(p.suffix == ".tar" for p in path.iterdir()):
        return _folder_pairs(path, split, spec, bad)
    return _shard_pairs(argument, split, spec, bad)


def _split_of(key: str, split: str) -> bool:
    return in_test_split(key, TEST_FRACTION) == (split == "test")


def _labelled(
    name: str, split: str, rows: list[tuple[ImageRef, str, str, str | None]]
) -> PairCorpus:
    """A corpus from (image, caption, key, label name or None) rows of the whole source:
    labels only when every row has one; class ids follow the sorted names of all rows."""
    names = [r[3] for r in rows]
    labelled = bool(rows) and all(n is not None for n in names)
    classes = sorted({str(n) for n in names}) if labelled else []
    chosen = [r for r in rows if _split_of(r[2], split)]
    return PairCorpus(
        name,
        split,
        images=[r[0] for r in chosen],
        captions=[r[1] for r in chosen],
        keys=[r[2] for r in chosen],
        labels=[classes.index(str(r[3])) for r in chosen] if labelled else None,
        class_names=classes,
    )


def _caption(raw: str, key: str, bad: _Bad) -> str | None:
    caption = " ".join(raw.split())
    if not caption:
        bad(f"pair {key} has an empty caption")
        return None
    return caption


def _folder_pairs(root: Path, split: str, spec: str, bad: _Bad) -> PairCorpus:
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise SelfsupError(
            f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}); check the path"
        )
    labelled = all("/" in f for f in files)
    rows: list[tuple[ImageRef, str, str, str | None]] = []
    for rel in files:
        text_file = (root / rel).with_suffix(".txt")
        if not text_file.is_file():
            bad(f"image {root / rel} has no caption file {text_file.name}")
            continue
        caption = _caption(text_file.read_text(encoding="utf-8", errors="replace"), rel, bad)
        if caption is not None:
            rows.append((root / rel, caption, rel, rel.split("/", 1)[0] if labelled else None))
    return _labelled(spec, split, rows)


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8", errors="replace") as file:
        return list(csv.DictReader(file))


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise SelfsupError(f"{path}:{number} is not JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise SelfsupError(f"{path}:{number} is not a JSON object")
            rows.append(row)
    return rows


def _manifest_pairs(
    rows: list[dict[str, Any]], path: Path, split: str, spec: str, bad: _Bad
) -> PairCorpus:
    if not rows:
        raise SelfsupError(f"manifest {path} holds no rows")
    for column in ("image", "caption"):
        if column not in rows[0]:
            raise SelfsupError(
                f"manifest {path} has no {column!r} column (it has {', '.join(map(str, rows[0]))}); "
                "pairs manifests need image, caption and optionally label"
            )
    labelled = all(row.get("label") not in (None, "") for row in rows)
    found: list[tuple[ImageRef, str, str, str | None]] = []
    for number, row in enumerate(rows, start=1):
        key = str(row["image"] or "")
        image = path.parent / key
        if not key or not image.is_file():
            bad(f"row {number} of {path} names a missing image file {key!r}")
            continue
        caption = _caption(str(row["caption"] or ""), f"{key} (row {number} of {path.name})", bad)
        if caption is not None:
            found.append((image, caption, key, str(row["label"]) if labelled else None))
    return _labelled(spec, split, found)


def _shard_pairs(argument: str, split: str, spec: str, bad: _Bad) -> PairCorpus:
    """Every pair of the split in WebDataset shards, read through webdataset's tar iterator."""
    from webdataset.tariterators import tarfile_samples  # type: ignore[import-untyped]

    from selfsup.data.webdataset import IMAGE_EXTENSIONS as MEMBERS
    from selfsup.data.webdataset import TEXT_EXTENSIONS, resolve

    source = resolve(argument, "train", spec)  # foreign shards: every sample, split by key
    rows: list[tuple[ImageRef, str, str, str | None]] = []
    for path in source.shards:
        try:
            for sample in tarfile_samples([{"url": str(path)}]):
                key = f"{path.name}/{sample['__key__']}"
                image = next((sample[e] for e in MEMBERS if e in sample), None)
                text = next((sample[e] for e in TEXT_EXTENSIONS if e in sample), None)
                if image is None or text is None:
                    bad(
                        f"shard sample {key} lacks {'an image' if image is None else 'a txt caption'}"
                    )
                    continue
                caption = _caption(text.decode("utf-8", errors="replace"), key, bad)
                if caption is not None:
                    label = sample["cls"].decode().strip() if "cls" in sample else None
                    rows.append((bytes(image), caption, key, label))
        except (tarfile.TarError, OSError, ValueError) as e:
            reason = str(e.args[0]) if e.args else type(e).__name__
            raise SelfsupError(f"shard file {path} is damaged ({reason})") from None
    return _labelled(spec, split, rows)


def openclipart_pairs(
    argument: str, split: str, spec: str, image_size: int, keep: bool = False
) -> PairCorpus:
    """openclipart's rendered drawings, each with the caption ``make_caption`` builds from its
    SVG metadata; labels are the top-level folders (22 categories). Without ``keep`` every
    word naming a category (singular or plural) is cut from the captions, so that zero-shot
    classification by category name is not read off the keywords. Drawings left with no
    caption are skipped and counted; the split is that of the ``openclipart`` image source."""
    from selfsup.data.openclipart import (
        DEFAULT_FOLDER,
        category_pattern,
        list_svgs,
        make_caption,
        openclipart_folder,
        openclipart_metadata,
    )

    root = Path(argument).expanduser() if argument else DEFAULT_FOLDER
    out = openclipart_folder(argument, image_size)
    svgs = list_svgs(root)
    metadata = openclipart_metadata(root, svgs, out)
    classes = sorted({rel.split("/", 1)[0] for rel in svgs if "/" in rel})
    remove = None if keep else category_pattern(classes)
    corpus = PairCorpus(spec, split, [], [], [], labels=[], class_names=classes)
    for rel in svgs:
        png = Path(rel).with_suffix(".png").as_posix()
        if "/" not in rel or not (out / png).is_file() or not _split_of(png, split):
            continue
        caption = make_caption(metadata[rel], remove)
        if not caption:
            corpus.skipped.append(f"{rel}: no caption left")
            continue
        corpus.images.append(out / png)
        corpus.captions.append(caption)
        corpus.keys.append(png)
        corpus.labels.append(classes.index(rel.split("/", 1)[0]))  # type: ignore[union-attr]
    return corpus


def decode_images(
    refs: list[ImageRef], keys: list[str], size: int | None, bad: Callable[[str], None]
) -> tuple[Tensor, list[int], int]:
    """The images (N', 3, S, S) uint8 that decode, the indices of those, and S (``size`` or
    the first good image's height)."""
    from PIL import UnidentifiedImageError

    images, kept = [], []
    for i, (ref, key) in enumerate(zip(refs, keys, strict=True)):
        source: Path | BinaryIO = ref if isinstance(ref, Path) else io.BytesIO(ref)
        try:
            if size is None:
                from PIL import Image

                with Image.open(source) as probe:
                    size = min(probe.size)
                if not isinstance(ref, Path):
                    source = io.BytesIO(ref)
            images.append(read_image(source, "RGB", (size, size)))
            kept.append(i)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
            bad(f"image of pair {key} cannot be decoded (corrupt or not an image)")
    stacked = (
        torch.stack(images)
        if images
        else torch.empty(0, 3, size or 1, size or 1, dtype=torch.uint8)
    )
    return stacked, kept, int(size or 1)


class PairDataset(Dataset[dict[str, Tensor]]):
    """A split of pairs decoded and tokenized into memory.

    Samples are ``{"image": uint8 (3, S, S), "tokens": int64 (L,), "label": int64 scalar}``
    (label -1 when unlabelled); ``texts()`` gives the captions, ``labels()`` the labels.
    """

    in_memory = False  # in memory, but a batch is two inputs: batches go through a loader
    input_key = "image"
    modality = "pairs"

    def __init__(
        self,
        corpus: PairCorpus,
        tokenizer: Any,
        max_length: int = 32,
        image_size: int | None = None,
        skip_bad: bool = False,
    ) -> None:
        from selfsup.data.tokenizer import encode_batch

        bad = _Bad(skip_bad)
        images, kept, size = decode_images(corpus.images, corpus.keys, image_size, bad)
        if not kept:
            raise SelfsupError(f"{corpus.name} has no readable images in the {corpus.split} split")
        self.name, self.split = corpus.name, corpus.split
        self.skipped = corpus.skipped + bad.skipped
        self.images = images  # (N, 3, S, S)
        self.channels, self.image_size = 3, (size, size)
        self._captions = [corpus.captions[i] for i in kept]
        self.tokenizer, self.max_length = tokenizer, max_length
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.tokens = encode_batch(tokenizer, self._captions, max_length)  # (N, L)
        self.has_labels = corpus.labels is not None
        labels = (
            [corpus.labels[i] for i in kept]
            if corpus.labels is not None
            else [UNLABELLED] * len(kept)
        )
        self._labels = torch.tensor(labels, dtype=torch.int64)  # (N,)
        self.class_names = list(corpus.class_names) if self.has_labels else []
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return len(self._captions)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {
            "image": self.images[index],
            "tokens": self.tokens[index],
            "label": self._labels[index],
        }

    def labels(self) -> Tensor:
        return self._labels

    def as_tensor(self) -> Tensor:
        """Every image, uint8 (N, 3, S, S)."""
        return self.images

    def texts(self) -> list[str]:
        """The captions, in sample order."""
        return self._captions

    def __repr__(self) -> str:
        labels = f"{self.num_classes} classes" if self.has_labels else "unlabelled"
        return f"PairDataset({self.name!r}, {self.split}, {len(self)} pairs, {self.image_size[0]} px, {labels})"


__all__ = ["PAIR_DATASETS", "PairCorpus", "PairDataset", "load_pairs"]
