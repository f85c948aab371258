"""WebDataset tar shards: what ``selfsup pack`` writes, and the ``wds:`` source that reads them.

A WebDataset shard is a plain tar file; the files of one sample share a key and differ by
extension (``000000042.png``, ``000000042.cls``). It is the format img2dataset writes and
open_clip reads, so a user's existing shards train as they are. Tar files are written with
``webdataset.TarWriter``; samples are decoded with webdataset's handlers (``cls``, ``txt``,
``json``) and, for images, with the same Pillow decoding as ``folder:`` sources.

A pack folder (``selfsup pack SOURCE OUT``)::

    OUT/train-00000.tar ...   samples {"png": image, "cls": label} or {"txt": text, "cls": label}
    OUT/test-00000.tar ...
    OUT/index.json            counts per shard, modality, image size, class names; written
                              last, so no index.json = no finished pack

Specs read by ``wds:`` (see ``resolve``):

    wds:OUT                            a pack folder: its index gives the splits
    wds:/data/shards                   a folder of foreign .tar files (img2dataset output)
    wds:/data/train-{00000..00009}.tar a brace pattern or one .tar file

Foreign shards (no index) are split by a hash of each sample's key, ~20% to test, the rule
``folder:`` sources use for paths; a pattern naming shards of a pack reads them as the pack's
split they belong to.

Reading keeps every guarantee of the ``.npy`` shards, because it is random access: the first
time a shard is read on a machine, one pass over its tar headers (Python's ``tarfile``, which
seeks over the file contents) records where each sample's files lie, and that table is kept in
the selfsup cache (keyed by path, size and modification time, so a changed file is scanned
again). A sample is then one positioned read. The epoch order is the windowed shuffle of
``selfsup.data.shards`` (shards permuted by (seed, epoch), samples shuffled among ``window``
shards at a time), which the engine's ``ResumableSampler`` splits across processes, hands to
loader workers and restarts at any sample: each sample once per epoch, exact mid-epoch resume.
A process holds the tables of at most ``MAX_OPEN_SHARDS`` shards, so memory does not grow with
the data set. A damaged shard (unreadable, truncated, counts unlike the index) is a
``SelfsupError`` naming the file.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import json
import os
import re
import tarfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from selfsup.cache import cache_dir
from selfsup.data.folder import TEST_FRACTION, UnreadableImageError, read_image
from selfsup.data.images import UNLABELLED, ImageDataset, Sample
from selfsup.data.shards import (
    WINDOW,
    check_splits,
    prepare_pack_folder,
    windowed_order,
    write_index,
)
from selfsup.data.split import in_test_split
from selfsup.errors import SelfsupError

FORMAT = "selfsup-webdataset"
VERSION = 1
"""Written into index.json; a reader refuses other formats and newer versions."""

SHARD_BYTES = 64 * 2**20
"""Default tar bytes per shard (64 MiB: ~26,000 28x28 PNG samples, ~5,000 64x64 RGB ones):
long sequential files, few of them, and a window of 8 is a modest slice of a large set."""

MAX_OPEN_SHARDS = 2 * WINDOW
"""Shards whose file and sample table a reading process keeps; older ones are dropped."""

INDEX = "index.json"
REPACK = "pack the data again with `selfsup pack`"
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "ppm", "pgm", "tif", "tiff", "gif")
"""Sample files read as the image, first match wins (img2dataset writes ``jpg``)."""
TEXT_EXTENSIONS = ("txt", "text")
PEEK_SAMPLES = 32
"""Images whose headers decide a foreign set's colour (grayscale only if all of them are)."""
TABLE_VERSION = 1

_OUR_FILE = re.compile(r"^(train|test)-\d{5}\.tar(\.tmp)?$")

Split = Literal["train", "test"]
Modality = Literal["image", "text"]


# ----------------------------------------------------------------------------- writing


class WebDatasetWriter:
    """Writes a pack folder of WebDataset shards one split at a time; ``finish`` writes
    index.json, the mark of a whole pack.

        writer = WebDatasetWriter(out, modality="image", channels=1, image_size=(28, 28))
        writer.write_split("train", samples)   # samples: {"png": bytes, "cls": int} dicts
        writer.finish(source="my-arrays", has_labels=True, class_names=[...])

    Each shard is written to ``NAME.tar.tmp`` and renamed once whole and synced; a new shard
    starts after ``shard_size`` samples, or else once the tar holds ``SHARD_BYTES``.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        modality: Modality,
        channels: int = 0,
        image_size: tuple[int, int] = (0, 0),
        shard_size: int | None = None,
    ) -> None:
        """Check ``out_dir`` (new, empty, or an interrupted pack's) and clear an interrupted
        pack's shards from it."""
        self.out = prepare_pack_folder(out_dir, shard_size, _OUR_FILE)
        self.modality = modality
        self.channels = channels
        self.image_size = image_size
        self.shard_size = shard_size
        self.splits: dict[str, dict[str, Any]] = {}

    def write_split(self, split: Split, samples: Iterable[dict[str, Any]]) -> int:
        """Write ``samples`` (dicts of extension -> bytes/str/int, no ``__key__``: keys are the
        sample numbers) as shards ``SPLIT-00000.tar``, ...; returns how many were written."""
        import webdataset as wds  # type: ignore[import-untyped]

        shards: list[dict[str, Any]] = []
        stream = iter(samples)
        number = 0
        pending = next(stream, None)
        while pending is not None:
            name = f"{split}-{len(shards):05d}.tar"
            path = self.out / name
            tmp = path.with_name(name + ".tmp")
            count = 0
            try:
                with tmp.open("wb") as f:
                    writer = wds.TarWriter(f, encoder=False, mtime=0)  # same bytes every time
                    try:
                        while pending is not None:
                            writer.write({"__key__": f"{number:09d}", **_as_bytes(pending)})
                            number += 1
                            count += 1
                            pending = next(stream, None)
                            full = writer.tarstream.offset >= SHARD_BYTES
                            if count == self.shard_size or (self.shard_size is None and full):
                                break
                    finally:
                        writer.close()  # the end-of-archive blocks (a failed .tmp is deleted)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            shards.append({"url": name, "count": count})
            _remember(path, scan_shard(path))  # readers on this machine skip the header pass
        self.splits[split] = {"count": number, "shards": shards}
        return number

    def finish(self, *, source: str, has_labels: bool, class_names: list[str]) -> dict[str, Any]:
        """Write index.json (atomically) and return it."""
        index: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "source": source,
            "modality": self.modality,
            "has_labels": has_labels,
            "class_names": list(class_names) if has_labels else [],
            "splits": self.splits,
        }
        if self.modality == "image":
            index["channels"] = self.channels
            index["image_size"] = list(self.image_size)
        write_index(self.out, index)
        return index


def _as_bytes(sample: dict[str, Any]) -> dict[str, bytes]:
    """A sample's values as the bytes webdataset stores: str as UTF-8, int as its digits."""
    out = {}
    for ext, value in sample.items():
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif isinstance(value, int | np.integer):
            value = str(int(value)).encode("ascii")
        out[ext] = value
    return out


def encode_png(image: Tensor | np.ndarray) -> bytes:
    """A uint8 (C, H, W) image as lossless PNG bytes (C = 1 grayscale, 3 RGB)."""
    array = np.asarray(image)
    pixels = array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def image_samples(
    chunks: Iterable[tuple[Tensor | np.ndarray, Tensor | np.ndarray | None]],
    shape: tuple[int, int, int],
) -> Iterator[dict[str, Any]]:
    """Samples ``{"png": bytes, "cls": label}`` from (images uint8 (B, C, H, W), labels (B,)
    or None) chunks; every image must have ``shape`` (C, H, W)."""
    for images, labels in chunks:
        array = np.asarray(images)
        if array.dtype != np.uint8 or array.shape[1:] != shape:
            raise SelfsupError(
                f"images to pack must be uint8 (B, {', '.join(map(str, shape))}), "
                f"got {array.dtype} {array.shape}"
            )
        values = None if labels is None else np.asarray(labels).reshape(-1)
        for i in range(len(array)):
            sample: dict[str, Any] = {"png": encode_png(array[i])}
            if values is not None and int(values[i]) != UNLABELLED:
                sample["cls"] = int(values[i])
            yield sample


def text_samples(texts: list[str], labels: list[int] | None) -> Iterator[dict[str, Any]]:
    """Samples ``{"txt": text, "cls": label}`` (no ``cls`` when unlabelled)."""
    for i, text in enumerate(texts):
        yield {"txt": text} if labels is None else {"txt": text, "cls": int(labels[i])}


# ----------------------------------------------------------------------------- sample tables


@dataclass
class ShardTable:
    """Where each sample of one tar shard lies: the result of one pass over its headers.

    Sample s owns the files ``first[s]:first[s+1]``; file f holds ``size[f]`` bytes at byte
    ``offset[f]``, extension ``exts[ext[f]]``. ``label`` is the sample's ``cls`` (-1 without
    one) and ``test`` whether a hash of its key puts it in the test split (foreign shards).
    """

    first: np.ndarray  # int64 (S + 1,)
    offset: np.ndarray  # int64 (F,)
    size: np.ndarray  # int64 (F,)
    ext: np.ndarray  # int16 (F,)
    exts: list[str]
    label: np.ndarray  # int64 (S,)
    test: np.ndarray  # bool (S,)

    def __len__(self) -> int:
        return len(self.label)

    def find(self, sample: int, extensions: tuple[str, ...]) -> tuple[int, int, str] | None:
        """(offset, size, extension) of the sample's first file with one of ``extensions``."""
        start, stop = int(self.first[sample]), int(self.first[sample + 1])
        codes = self.ext[start:stop].tolist()  # a few files: plain Python is fastest
        for wanted in extensions:
            if wanted in self.exts and self.exts.index(wanted) in codes:
                f = start + codes.index(self.exts.index(wanted))
                return int(self.offset[f]), int(self.size[f]), wanted
        return None


def scan_shard(path: Path) -> ShardTable:
    """One pass over the tar headers of ``path`` (``tarfile`` seeks over the contents; only
    ``cls`` files are read). Files are grouped into samples by key as webdataset groups them
    (consecutive files with the same name up to the first dot). A SelfsupError names a file
    that is missing, is not a tar, or is cut short."""
    from webdataset.tariterators import base_plus_ext  # type: ignore[import-untyped]

    try:
        file_size = path.stat().st_size
        first: list[int] = []
        offset: list[int] = []
        size: list[int] = []
        ext: list[int] = []
        label: list[int] = []
        test: list[bool] = []
        exts: list[str] = []
        current = None
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                key, suffix = base_plus_ext(info.name)
                if key is None or re.match(r"__[^/]*__($|/)", info.name):  # webdataset's meta
                    continue
                suffix = suffix.lower()
                if info.offset_data + info.size > file_size:
                    raise ValueError(f"{info.name} runs past the end of the file")
                if key != current:
                    first.append(len(offset))
                    label.append(UNLABELLED)
                    test.append(in_test_split(key, TEST_FRACTION))
                    current = key
                if suffix not in exts:
                    exts.append(suffix)
                offset.append(info.offset_data)
                size.append(info.size)
                ext.append(exts.index(suffix))
                if suffix == "cls":
                    label[-1] = int(tar.extractfile(info).read())  # type: ignore[union-attr]
                tar.members = []  # type: ignore[attr-defined]  # held by tarfile otherwise: memory would grow with the shard
            end = tar.offset  # after the last file: where the end-of-archive blocks must be
        with path.open("rb") as f:
            f.seek(end)
            tail = f.read(2 * tarfile.BLOCKSIZE)
        if len(tail) < 2 * tarfile.BLOCKSIZE or tail.strip(b"\0"):
            raise ValueError("it ends without the tar end-of-archive blocks: cut short?")
    except FileNotFoundError:
        raise SelfsupError(f"shard file {path} is missing; check the path, or {REPACK}") from None
    except (tarfile.TarError, OSError, ValueError, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SelfsupError(
            f"shard file {path} is damaged ({reason}); {REPACK} (or re-download the shard)"
        ) from None
    first.append(len(offset))
    return ShardTable(
        np.asarray(first, np.int64),
        np.asarray(offset, np.int64),
        np.asarray(size, np.int64),
        np.asarray(ext, np.int16),
        exts,
        np.asarray(label, np.int64),
        np.asarray(test, bool),
    )


def _table_file(path: Path) -> Path:
    """The cache file of a shard's table: named by its real path, size and modification time."""
    stat = path.stat()
    name = f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{TABLE_VERSION}"
    return cache_dir("wds-tables") / (hashlib.sha1(name.encode()).hexdigest() + ".npz")


def _remember(path: Path, table: ShardTable) -> None:
    """Keep ``table`` in the cache (written whole, then renamed: processes may race)."""
    try:
        target = _table_file(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        with tmp.open("wb") as f:
            np.savez(
                f,
                first=table.first,
                offset=table.offset,
                size=table.size,
                ext=table.ext,
                exts=np.asarray(table.exts, dtype=str),
                label=table.label,
                test=table.test,
            )
        os.replace(tmp, target)
    except OSError:  # a read-only cache only costs another header pass next time
        pass


def shard_table(path: Path) -> ShardTable:
    """The sample table of shard ``path``: from the cache, else by one header pass (kept)."""
    try:
        cached = _table_file(path)
    except FileNotFoundError:
        raise SelfsupError(f"shard file {path} is missing; check the path, or {REPACK}") from None
    if cached.is_file():
        try:
            with np.load(cached) as z:
                return ShardTable(
                    z["first"], z["offset"], z["size"], z["ext"], [str(e) for e in z["exts"]],
                    z["label"], z["test"],
                )  # fmt: skip
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is scanned again
    table = scan_shard(path)
    _remember(path, table)
    return table


# ----------------------------------------------------------------------------- what a spec names


@dataclass
class Source:
    """The shards of one split: their paths, and which of each shard's samples belong to it
    (``None``: all of them, as a pack's index says; else by the hash of the key)."""

    spec: str
    shards: list[Path]
    counts: list[int] | None  # per shard, from a pack's index; None: foreign, from the tables
    index: dict[str, Any] | None  # the pack's index.json, None for foreign shards


def resolve(argument: str, split: Split, spec: str | None = None) -> Source:
    """The shards that ``wds:ARGUMENT`` names, for one split; see the module docstring."""
    from webdataset.shardlists import expand_urls  # type: ignore[import-untyped]

    spec = spec or f"wds:{argument}"
    if not argument:
        raise SelfsupError(
            "wds needs a path: --data wds:FOLDER (from `selfsup pack` or img2dataset), "
            "wds:FILE.tar or wds:/data/train-{00000..00009}.tar"
        )
    if "://" in argument or argument.startswith("pipe:"):
        raise SelfsupError(
            f"{spec}: only local shard files can be read (random access keeps the epoch "
            "order exact); copy the shards to a local or mounted disk"
        )
    path = Path(argument).expanduser()
    if path.is_dir():
        if (path / INDEX).is_file():
            index = read_index(path)
            return _pack_split(path, index, split, spec, names=None)
        files = sorted(p for p in path.iterdir() if p.suffix == ".tar" and p.is_file())
        if any(_OUR_FILE.match(p.name) for p in files):
            raise SelfsupError(
                f"{path / INDEX} is missing: {path} is not a finished pack (an interrupted one "
                f"has none); {REPACK} SOURCE {path}"
            )
        if not files:
            raise SelfsupError(
                f"{path} holds no .tar shards and no {INDEX}; point wds: at the folder that "
                "`selfsup pack` or img2dataset wrote"
            )
        return Source(spec, files, None, None)
    files = [Path(u).expanduser() for u in expand_urls(argument)]
    for file in files:
        if not file.is_file():
            what = "folder" if not files[0].parent.is_dir() else "shard file"
            missing = file.parent if what == "folder" else file
            raise SelfsupError(f"{what} {missing} does not exist; check the path after wds:")
    folders = {f.parent for f in files}
    if len(folders) == 1 and (files[0].parent / INDEX).is_file():
        index = read_index(files[0].parent)
        named = {f.name for f in files}
        ours = {s["url"] for part in index["splits"].values() for s in part["shards"]}
        if named <= ours:
            return _pack_split(files[0].parent, index, split, spec, names=named)
    return Source(spec, files, None, None)


def _pack_split(
    root: Path, index: dict[str, Any], split: Split, spec: str, names: set[str] | None
) -> Source:
    """One split of a pack: its shards (only those in ``names`` when it lists any of them)."""
    if split not in index["splits"]:
        raise SelfsupError(
            f"{root} holds no {split} split (it has {', '.join(index['splits']) or 'none'}); "
            f"{REPACK} SOURCE {root}, which writes both"
        )
    shards = index["splits"][split]["shards"]
    if names is not None and any(s["url"] in names for s in shards):
        shards = [s for s in shards if s["url"] in names]
    return Source(spec, [root / s["url"] for s in shards], [int(s["count"]) for s in shards], index)


def read_index(root: Path) -> dict[str, Any]:
    """index.json of a pack folder, checked; a SelfsupError naming the file otherwise."""
    path = root / INDEX
    try:
        index = json.loads(path.read_text())
        if index.get("format") != FORMAT:
            raise ValueError(f"format is {index.get('format')!r}, not {FORMAT!r}")
        if not isinstance(index.get("version"), int) or index["version"] > VERSION:
            raise ValueError(
                f"version {index.get('version')!r}; this selfsup reads up to {VERSION}"
            )
        if index["modality"] not in ("image", "text"):
            raise ValueError(f"unknown modality {index['modality']!r}")
        if index["modality"] == "image":
            channels = int(index["channels"])
            height, width = (int(x) for x in index["image_size"])
            if channels not in (1, 3) or height < 1 or width < 1:
                raise ValueError(f"bad image shape {channels}x{height}x{width}")
        check_splits(index, _OUR_FILE, "url")
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        reason = e.args[0] if isinstance(e, KeyError) else e
        missing = "no " if isinstance(e, KeyError) else ""
        raise SelfsupError(
            f"{path} is not a valid shard index ({missing}{reason}); {REPACK}"
        ) from None
    return index


@functools.lru_cache(maxsize=32)
def modality(argument: str) -> Modality:
    """``"image"`` or ``"text"``: a pack's index says; foreign shards by their first sample
    (an image file makes it images, else a ``txt`` file text)."""
    source = resolve(argument, "train")
    if source.index is not None:
        return source.index["modality"]  # type: ignore[no-any-return]
    table = shard_table(source.shards[0])
    if len(table) == 0:
        raise SelfsupError(f"shard file {source.shards[0]} holds no samples; check the shards")
    if table.find(0, IMAGE_EXTENSIONS) is not None:
        return "image"
    if table.find(0, TEXT_EXTENSIONS) is not None:
        return "text"
    raise SelfsupError(
        f"the samples of {source.shards[0]} hold neither an image ({', '.join(IMAGE_EXTENSIONS)}) "
        f"nor a text ({', '.join(TEXT_EXTENSIONS)}) file; selfsup reads images and text from wds:"
    )


def _split_rows(
    table: ShardTable, source: Source, split: Split, shard: int, path: Path
) -> np.ndarray:
    """The rows of ``table`` in the split: all of a pack's shard (checked against its count),
    or those whose key hashes into the split."""
    if source.counts is None:
        return np.flatnonzero(table.test == (split == "test"))
    if len(table) != source.counts[shard]:
        raise SelfsupError(
            f"shard file {path} holds {len(table)} samples, its index says "
            f"{source.counts[shard]} (damaged or replaced?); {REPACK}"
        )
    return np.arange(len(table))


# ----------------------------------------------------------------------------- images


class WebDatasetImages(ImageDataset):
    """One split of image shards (``wds:``), read sample by sample from disk.

    ``epoch_order`` is the windowed shuffle of the ``.npy`` shards, so the engine's sampler
    splits it across processes and workers and resumes mid-epoch exactly. Construction reads
    (or, on first use, makes) every shard's sample table, so a missing or damaged shard stops
    here, naming the file.

    Foreign shards: colour and size come from the first images (grayscale only when all of the
    first ``PEEK_SAMPLES`` are; ``image_size`` resizes every image); labels from ``cls`` files
    when every sample has one (class names "0", "1", ...), else the set is unlabelled.
    """

    in_memory = False

    def __init__(
        self,
        argument: str,
        split: Split = "train",
        *,
        image_size: int | None = None,
        window: int = WINDOW,
        name: str | None = None,
    ) -> None:
        if window < 1:
            raise SelfsupError(f"the shuffle window must be at least 1 shard, got {window}")
        self.name = name if name is not None else f"wds:{argument}"
        self.source = resolve(argument, split, self.name)
        self.split = split
        self.window = window
        self.skipped = []
        self._open: OrderedDict[int, tuple[int, ShardTable, np.ndarray]] = OrderedDict()
        counts, labelled, top = [], True, -1
        for s, path in enumerate(self.source.shards):
            table = shard_table(path)
            rows = _split_rows(table, self.source, split, s, path)
            counts.append(len(rows))
            labels = table.label[rows]
            labelled = labelled and bool((labels >= 0).all())
            top = max(top, int(labels.max(initial=-1)))
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._starts = self._offsets[:-1].tolist()
        index = self.source.index
        if index is not None:
            if index["modality"] != "image":
                raise SelfsupError(f"{self.name} holds {index['modality']}, not images")
            self.channels = int(index["channels"])
            stored = (int(index["image_size"][0]), int(index["image_size"][1]))
            self.has_labels = bool(index["has_labels"])
            self.class_names = [str(c) for c in index["class_names"]] if self.has_labels else []
        else:
            self.channels, stored = self._peek()
            self.has_labels = labelled and len(self) > 0
            self.class_names = [str(i) for i in range(top + 1)] if self.has_labels else []
        self.image_size = (image_size, image_size) if image_size is not None else stored
        self.num_classes = len(self.class_names)
        self._mode: Literal["L", "RGB"] = "L" if self.channels == 1 else "RGB"

    def _peek(self) -> tuple[int, tuple[int, int]]:
        """(channels, (H, W)) of a foreign set, from the headers of its first images."""
        modes: list[str] = []
        size: tuple[int, int] | None = None
        for s in range(min(self.num_shards, 4)):
            if len(modes) >= PEEK_SAMPLES:
                break
            fd, table, rows = self._shard(s)
            for row in rows[: PEEK_SAMPLES - len(modes)]:
                data, key = self._image_bytes(s, int(row))
                try:
                    with Image.open(io.BytesIO(data)) as im:
                        modes.append(im.mode)
                        size = size or (im.height, im.width)
                except (OSError, ValueError) as e:
                    raise self._unreadable(s, key, e) from None
        if size is None:
            raise SelfsupError(f"{self.name} has no samples in the {self.split} split")
        gray = all(m in ("1", "L", "LA", "I", "I;16", "F") or m.startswith("I;") for m in modes)
        return (1 if gray else 3), size

    @property
    def num_shards(self) -> int:
        return len(self.source.shards)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def shard_of(self, index: int) -> int:
        """The shard that holds sample ``index``."""
        return bisect.bisect_right(self._starts, index) - 1

    def _shard(self, shard: int) -> tuple[int, ShardTable, np.ndarray]:
        """(open file, table, rows of the split) of a shard, the least recently used dropped."""
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard]
        path = self.source.shards[shard]
        table = shard_table(path)
        rows = _split_rows(table, self.source, self.split, shard, path)  # type: ignore[arg-type]
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise UnreadableImageError(
                f"cannot open shard file {path} ({e.strerror}); {REPACK}"
            ) from None
        self._open[shard] = (fd, table, rows)
        while len(self._open) > MAX_OPEN_SHARDS:
            os.close(self._open.popitem(last=False)[1][0])
        return self._open[shard]

    def _image_bytes(self, shard: int, row: int) -> tuple[bytes, str]:
        """The encoded image of row ``row`` of a shard, and a name for it in errors."""
        fd, table, _ = self._shard(shard)
        path = self.source.shards[shard]
        found = table.find(row, IMAGE_EXTENSIONS)
        if found is None:
            raise UnreadableImageError(
                f"sample {row} of shard file {path} has no image file ({', '.join(table.exts)}); "
                "every sample of an image set needs one"
            )
        offset, size, ext = found
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise UnreadableImageError(
                f"shard file {path} ended early (changed since it was opened?); {REPACK}"
            )
        return data, f"{row} ({ext})"

    def _unreadable(self, shard: int, key: str, error: BaseException) -> UnreadableImageError:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return UnreadableImageError(
            f"sample {key} of shard file {self.source.shards[shard]} cannot be decoded "
            f"({reason}); {REPACK} (or re-download the shard)"
        )

    def __getitem__(self, index: int) -> Sample:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[Sample]:
        """Samples ``indices`` (the DataLoader asks for a whole batch): one positioned read
        and one decode per image; labels come from the tables."""
        size = len(self)
        images = torch.empty((len(indices), self.channels, *self.image_size), dtype=torch.uint8)
        labels = torch.full((len(indices),), UNLABELLED, dtype=torch.int64)
        for j, index in enumerate(indices):
            if not 0 <= index < size:
                raise IndexError(f"sample {index} of {size}")
            shard = self.shard_of(index)
            _, table, rows = self._shard(shard)
            row = int(rows[index - self._starts[shard]])
            data, key = self._image_bytes(shard, row)
            try:
                images[j] = read_image(io.BytesIO(data), self._mode, self.image_size)
            except (OSError, ValueError, SyntaxError) as e:
                raise self._unreadable(shard, key, e) from None
            if self.has_labels:
                labels[j] = int(table.label[row])
        return [{"image": x, "label": y} for x, y in zip(images.unbind(0), labels.unbind(0))]

    def read_file(self, index: int, extension: str) -> bytes | None:
        """The raw bytes of sample ``index``'s ``extension`` file (e.g. the ``txt`` caption of
        an img2dataset sample), None when it has none."""
        shard = self.shard_of(index)
        fd, table, rows = self._shard(shard)
        found = table.find(int(rows[index - self._starts[shard]]), (extension,))
        return None if found is None else os.pread(fd, found[1], found[0])

    def epoch_order(self, seed: int, epoch: int) -> Iterator[np.ndarray]:
        """The epoch's order, one shuffle window at a time (``shards.windowed_order``)."""
        return windowed_order(self._offsets, self.window, seed, epoch)

    def labels(self) -> Tensor:
        """Every label, int64 (N,), from the tables (no image is read)."""
        if not self.has_labels:
            return torch.full((len(self),), UNLABELLED, dtype=torch.int64)
        parts = []
        for s, path in enumerate(self.source.shards):
            table = shard_table(path)
            parts.append(table.label[_split_rows(table, self.source, self.split, s, path)])  # type: ignore[arg-type]
        return torch.from_numpy(np.concatenate(parts or [np.empty(0, np.int64)]))

    def as_tensor(self) -> Tensor:
        """Every image in one uint8 (N, C, H, W) tensor: the whole split in memory, meant for
        evaluating on a split that fits (training reads sample by sample)."""
        out = torch.empty((len(self), self.channels, *self.image_size), dtype=torch.uint8)
        for start in range(0, len(self), 1024):
            batch = self.__getitems__(list(range(start, min(start + 1024, len(self)))))
            out[start : start + len(batch)] = torch.stack([s["image"] for s in batch])
        return out

    def close(self) -> None:
        """Close the open shard files (reading again reopens them)."""
        while self._open:
            os.close(self._open.popitem()[1][0])

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __getstate__(self) -> dict[str, Any]:  # file descriptors do not travel to workers
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state


# ----------------------------------------------------------------------------- text


def read_texts(argument: str, split: Split) -> tuple[list[str], list[int] | None, list[str]]:
    """One split of text shards as (texts, labels or None, class names), streamed through
    webdataset's tar iterators shard by shard. Labels come from ``cls`` files when every
    sample has one; the text from the ``txt`` file (UTF-8, stripped; empty ones dropped)."""
    from webdataset.tariterators import tarfile_samples  # type: ignore[import-untyped]

    source = resolve(argument, split)
    if source.index is not None and source.index["modality"] != "text":
        raise SelfsupError(f"{source.spec} holds {source.index['modality']}, not text")
    texts: list[str] = []
    labels: list[int] = []
    for s, path in enumerate(source.shards):
        count = 0
        try:
            for sample in tarfile_samples([{"url": str(path)}]):
                count += 1
                if source.counts is None and in_test_split(sample["__key__"], TEST_FRACTION) != (
                    split == "test"
                ):
                    continue
                raw = next((sample[e] for e in TEXT_EXTENSIONS if e in sample), None)
                if raw is None:
                    raise ValueError(f"sample {sample['__key__']} has no txt file")
                text = raw.decode("utf-8").strip()
                if text:
                    texts.append(text)
                    labels.append(int(sample["cls"]) if "cls" in sample else UNLABELLED)
        except (tarfile.TarError, OSError, ValueError, UnicodeDecodeError) as e:
            reason = str(e.args[0]) if e.args else type(e).__name__
            raise SelfsupError(f"shard file {path} is damaged ({reason}); {REPACK}") from None
        if source.counts is not None and count != source.counts[s]:
            raise SelfsupError(
                f"shard file {path} holds {count} samples, its index says {source.counts[s]} "
                f"(damaged or replaced?); {REPACK}"
            )
    if source.index is not None:
        if not source.index["has_labels"]:
            return texts, None, []
        return texts, labels, [str(c) for c in source.index["class_names"]]
    if not labels or min(labels) < 0:
        return texts, None, []
    return texts, labels, [str(i) for i in range(max(labels) + 1)]


def holds(spec: str, sources: dict[str, str], kind: str, *, unreadable: bool) -> bool:
    """Whether ``spec`` names a source of modality ``kind``: its prefix is one of ``sources``,
    or it names WebDataset shards whose samples are of that kind. ``unreadable`` is the
    answer for shards that cannot be read (the modality that reports their error says True)."""
    prefix, _, argument = spec.partition(":")
    prefix = prefix.strip().lower()
    if prefix != "wds":
        return prefix in sources
    try:
        return modality(argument.strip()) == kind
    except SelfsupError:
        return unreadable
