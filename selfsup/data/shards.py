"""Data larger than memory: uint8 records in shards on disk, written by ``selfsup pack``.

A pack folder::

    OUT/index.json              what is in it; written last, so no index.json = no finished pack
    OUT/train-00000.npy         images, uint8 (n, C, H, W): a plain .npy file
    OUT/train-00000.labels.npy  labels, int64 (n,); -1 when the source has none
    OUT/train-00001.npy ...     every shard of a split holds ``shard_size`` records, the last fewer
    OUT/test-00000.npy ...

Writing streams: images arrive in chunks (a folder is decoded through the loader, ``chunk_size``
images at a time), go straight into ``NAME.npy.tmp``, and a shard takes its final name only
once it is whole and synced. A killed pack leaves ``.tmp`` files and no index.json; packing
into the same folder again clears them.

Reading (``ShardDataset``, the ``shards:PATH`` source) takes one positioned read per sample
from the shard files: a process holds only the samples it is decoding, the OS page cache does
the caching, and memory does not grow with the data set.

Shuffling by a buffer, exactly resumable: an epoch's order is a pure function of (seed,
epoch). The shards are permuted, taken ``window`` at a time, and the samples of each window
are shuffled together; so reading moves through the set ``window`` shards at a time (the
shuffle buffer) instead of seeking across all of it. The engine's ``ResumableSampler`` takes
this order (``order=dataset.epoch_order``), splits it across processes, and starts mid-epoch
on resume; loader workers get their indices from that sampler, so none is read twice.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from selfsup.data.folder import UnreadableImageError
from selfsup.data.images import UNLABELLED, ImageDataset, Sample, resize_images
from selfsup.errors import SelfsupError

FORMAT = "selfsup-shards"
VERSION = 1
"""Written into index.json; a reader refuses other formats and newer versions."""

SHARD_BYTES = 64 * 2**20
"""Default pixels per shard (64 MiB: 85,598 images of 28x28, 5,461 of 64x64 RGB): large
enough for long sequential reads and few files, small enough that a window of shards is a
modest slice of a large set."""

WINDOW = 8
"""Default shuffle window, in shards: samples are shuffled among 8 shards' worth at a time.
A larger window mixes better and reads more scattered; a set of at most 8 shards is shuffled
completely."""

MAX_OPEN_SHARDS = 2 * WINDOW
"""Shard files a reading process keeps open; older ones are closed."""

INDEX = "index.json"
REPACK = "pack the data again with `selfsup pack`"
_OUR_FILE = re.compile(r"^(train|test)-\d{5}(\.labels)?\.npy(\.tmp)?$")

Split = Literal["train", "test"]


def default_shard_size(channels: int, image_size: tuple[int, int]) -> int:
    """Images per shard when none is given: ``SHARD_BYTES`` of pixels, at least one image."""
    return max(1, SHARD_BYTES // (channels * image_size[0] * image_size[1]))


def windowed_order(offsets: np.ndarray, window: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """An epoch's sample order over shards, one shuffle window at a time: shard s holds
    samples ``offsets[s]:offsets[s+1]``; the shards are permuted by (seed, epoch), then the
    samples of each ``window`` consecutive shards are shuffled together. A pure function of
    its arguments, as ``ResumableSampler`` needs for exact resume."""
    num_shards = len(offsets) - 1
    rng = np.random.default_rng([seed % 2**63, epoch])
    shards = rng.permutation(num_shards)
    for start in range(0, num_shards, window):
        chosen = shards[start : start + window]
        indices = np.concatenate([np.arange(offsets[s], offsets[s + 1]) for s in chosen])
        rng.shuffle(indices)
        yield indices


# ----------------------------------------------------------------------------- writing


class ShardWriter:
    """Writes a pack folder one split at a time; ``finish`` writes index.json, the mark of a
    whole pack.

        writer = ShardWriter(out, channels=1, image_size=(28, 28))
        writer.write_split("train", n, chunks)   # chunks: (images uint8 (B, C, H, W), labels (B,) or None)
        writer.finish(source="my-arrays", has_labels=True, class_names=[...])
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        channels: int,
        image_size: tuple[int, int],
        shard_size: int | None = None,
    ) -> None:
        """Check ``out_dir`` (new, empty, or an interrupted pack's), clear an interrupted pack's
        files from it, and fix the record shape (C, H, W)."""
        self.out = prepare_pack_folder(out_dir, shard_size, _OUR_FILE)
        self.shape = (channels, *image_size)  # (C, H, W)
        self.shard_size = shard_size or default_shard_size(channels, image_size)
        self.splits: dict[str, dict[str, Any]] = {}

    def write_split(
        self,
        split: Split,
        count: int,
        chunks: Iterable[tuple[Tensor | np.ndarray, Tensor | np.ndarray | None]],
    ) -> None:
        """Write ``count`` records from ``chunks`` into shards ``SPLIT-00000.npy``, ...; the
        chunks may have any sizes, and only one is held at a time."""
        records = _Records(chunks, self.shape)
        shards = []
        for number, start in enumerate(range(0, count, self.shard_size)):
            n = min(self.shard_size, count - start)
            name = f"{split}-{number:05d}"
            _write_shard(self.out / f"{name}.npy", self.out / f"{name}.labels.npy", records, n)
            shards.append({"images": f"{name}.npy", "labels": f"{name}.labels.npy", "count": n})
        if records.more():
            raise SelfsupError(f"the {split} split gave more than the {count} images it announced")
        self.splits[split] = {"count": count, "shards": shards}

    def finish(self, *, source: str, has_labels: bool, class_names: list[str]) -> dict[str, Any]:
        """Write index.json (atomically) and return it."""
        index = {
            "format": FORMAT,
            "version": VERSION,
            "source": source,
            "dtype": "uint8",
            "channels": self.shape[0],
            "image_size": list(self.shape[1:]),
            "has_labels": has_labels,
            "class_names": list(class_names) if has_labels else [],
            "shard_size": self.shard_size,
            "splits": self.splits,
        }
        write_index(self.out, index)
        return index


def prepare_pack_folder(out_dir: str | Path, shard_size: int | None, ours: re.Pattern[str]) -> Path:
    """``out_dir`` made ready for a pack: refused when it is a file or holds a finished pack,
    created if missing, and cleared of an interrupted pack's shards (names matching ``ours``)."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise SelfsupError(f"{out} is a file; give pack a folder to write the shards into")
    if (out / INDEX).exists():
        raise SelfsupError(
            f"{out} already holds a pack ({out / INDEX}); delete it or choose another folder"
        )
    if shard_size is not None and (isinstance(shard_size, bool) or shard_size < 1):
        raise SelfsupError(f"shard size must be a positive number of samples, got {shard_size}")
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.iterdir():  # shards of an interrupted pack: rewritten after this
        if ours.match(leftover.name):
            leftover.unlink()
    return out


def write_index(out: Path, index: dict[str, Any]) -> None:
    """``out/index.json``, written to a temporary name, synced and renamed: the last step of a
    pack, so a folder without it holds no finished pack."""
    tmp = out / (INDEX + ".tmp")
    with tmp.open("w") as f:
        json.dump(index, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / INDEX)


def check_splits(index: dict[str, Any], ours: re.Pattern[str], *name_keys: str) -> None:
    """Raise ValueError unless every split's shard counts add up and its file names (under
    ``name_keys``) are plain shard names of a pack."""
    for split in index["splits"].values():
        counts = [int(s["count"]) for s in split["shards"]]
        if sum(counts) != int(split["count"]) or min(counts, default=1) < 1:
            raise ValueError("the shard counts do not add up to the split's count")
        for s in split["shards"]:
            for key in name_keys:  # plain names inside the folder only
                if not ours.match(s[key]) or s[key].endswith(".tmp"):
                    raise ValueError(f"bad shard file name {s[key]!r}")
    if not isinstance(index["class_names"], list) or not isinstance(index["has_labels"], bool):
        raise ValueError("class_names must be a list and has_labels true or false")


class _Records:
    """Records from a stream of chunks, handed out ``take(k)`` at a time whatever the chunk
    sizes; holds at most one chunk."""

    def __init__(
        self,
        chunks: Iterable[tuple[Tensor | np.ndarray, Tensor | np.ndarray | None]],
        shape: tuple[int, ...],
    ) -> None:
        self._chunks = iter(chunks)
        self.shape = shape  # (C, H, W) of every record
        self._images = np.empty((0, *shape), np.uint8)
        self._labels = np.empty(0, np.int64)
        self.given = 0

    def _next_chunk(self) -> bool:
        try:
            images, labels = next(self._chunks)
        except StopIteration:
            return False
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != self.shape:
            raise SelfsupError(
                f"images to pack must be uint8 (B, {', '.join(map(str, self.shape))}), "
                f"got {images.dtype} {images.shape}"
            )
        n = len(images)
        if labels is None:
            labels = np.full(n, UNLABELLED, np.int64)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(labels) != n:
            raise SelfsupError(f"a chunk of {n} images came with {len(labels)} labels")
        self._images, self._labels = images, labels
        return True

    def take(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``k`` next records (at least one): images (b, C, H, W), labels (b,)."""
        while len(self._images) == 0:
            if not self._next_chunk():
                raise SelfsupError(
                    f"the data ran out after {self.given} images, fewer than it announced"
                )
        images, labels = self._images[:k], self._labels[:k]
        self._images, self._labels = self._images[k:], self._labels[k:]
        self.given += len(images)
        return images, labels

    def more(self) -> bool:
        """Whether records are left (the stream gave more than was written)."""
        return len(self._images) > 0 or self._next_chunk()


def _write_shard(images_path: Path, labels_path: Path, records: _Records, n: int) -> None:
    """Stream ``n`` records into ``images_path`` and their labels into ``labels_path``, both via
    a ``.tmp`` file renamed once complete and synced."""
    shape = (n, *records.shape)
    tmp_images = images_path.with_name(images_path.name + ".tmp")
    tmp_labels = labels_path.with_name(labels_path.name + ".tmp")
    labels = np.empty(n, np.int64)
    try:
        with tmp_images.open("wb") as f:
            header = {"descr": "|u1", "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(f, header)
            done = 0
            while done < n:
                images, chunk_labels = records.take(n - done)
                f.write(np.ascontiguousarray(images).data)
                labels[done : done + len(images)] = chunk_labels
                done += len(images)
            f.flush()
            os.fsync(f.fileno())
        with tmp_labels.open("wb") as f:
            np.save(f, labels.astype("<i8"))  # little-endian, as the reader expects
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_labels, labels_path)
        os.replace(tmp_images, images_path)
    except BaseException:
        tmp_images.unlink(missing_ok=True)
        tmp_labels.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- reading


def read_index(root: Path) -> dict[str, Any]:
    """index.json of a pack folder, checked; a SelfsupError naming the file otherwise."""
    if not root.exists():
        raise SelfsupError(f"folder {root} does not exist; check the path after shards:")
    if not root.is_dir():
        raise SelfsupError(f"{root} is a file; shards:PATH takes the folder `selfsup pack` wrote")
    path = root / INDEX
    if not path.is_file():
        raise SelfsupError(
            f"{path} is missing: {root} is not a finished pack (an interrupted one has none); "
            f"{REPACK} SOURCE {root}"
        )
    try:
        index = json.loads(path.read_text())
        if index.get("format") != FORMAT:
            raise ValueError(f"format is {index.get('format')!r}, not {FORMAT!r}")
        if not isinstance(index.get("version"), int) or index["version"] > VERSION:
            raise ValueError(
                f"version {index.get('version')!r}; this selfsup reads up to {VERSION}"
            )
        channels = int(index["channels"])
        height, width = (int(x) for x in index["image_size"])
        if channels not in (1, 3) or height < 1 or width < 1 or index["dtype"] != "uint8":
            raise ValueError(f"bad image shape {channels}x{height}x{width} {index['dtype']}")
        check_splits(index, _OUR_FILE, "images", "labels")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        reason = e.args[0] if isinstance(e, KeyError) else e
        missing = "no " if isinstance(e, KeyError) else ""
        raise SelfsupError(
            f"{path} is not a valid shard index ({missing}{reason}); {REPACK}"
        ) from None
    return index


def _data_offset(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Where the records of the .npy shard ``path`` start, after checking that its header
    says ``dtype`` ``shape`` and that the file holds all of them."""
    if not path.is_file():
        raise SelfsupError(f"shard file {path} is missing; {REPACK}")
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            got_shape, fortran, got_dtype = read_header(f)
            offset = f.tell()
    except (ValueError, OSError, SyntaxError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SelfsupError(f"shard file {path} is corrupt ({reason}); {REPACK}") from None
    if tuple(got_shape) != shape or got_dtype != dtype or fortran:
        raise SelfsupError(
            f"shard file {path} holds {got_dtype} {tuple(got_shape)}, the index says "
            f"{dtype} {shape}; {REPACK}"
        )
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise SelfsupError(
            f"shard file {path} is {size:,} bytes, {expected:,} expected (truncated?); {REPACK}"
        )
    return offset


class ShardDataset(ImageDataset):
    """One split of a pack folder (``shards:PATH``), read sample by sample from disk.

    ``epoch_order`` is the windowed shuffle (see the module docstring); the engine's sampler
    uses it. Construction reads index.json and every shard's header, so a missing, truncated
    or foreign shard stops here, naming the file.
    """

    in_memory = False

    def __init__(
        self,
        root: str | Path,
        split: Split = "train",
        *,
        image_size: int | None = None,
        window: int = WINDOW,
        name: str | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        index = read_index(self.root)
        if split not in index["splits"]:
            raise SelfsupError(
                f"{self.root} holds no {split} split (it has {', '.join(index['splits']) or 'none'}); "
                f"{REPACK} SOURCE {self.root}, which writes both"
            )
        if window < 1:
            raise SelfsupError(f"the shuffle window must be at least 1 shard, got {window}")
        self.name = name if name is not None else f"shards:{root}"
        self.split = split
        self.window = window
        self.channels = int(index["channels"])
        self.stored_size = (int(index["image_size"][0]), int(index["image_size"][1]))
        self.image_size = (image_size, image_size) if image_size is not None else self.stored_size
        self.has_labels = bool(index["has_labels"])
        self.class_names = [str(c) for c in index["class_names"]] if self.has_labels else []
        self.num_classes = len(self.class_names)
        self.skipped = []

        shards = index["splits"][split]["shards"]
        self._record = self.channels * self.stored_size[0] * self.stored_size[1]
        self._images = [self.root / s["images"] for s in shards]
        self._label_files = [self.root / s["labels"] for s in shards]
        counts = np.array([int(s["count"]) for s in shards], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])  # shard s holds [o[s], o[s+1])
        self._starts = self._offsets[:-1].tolist()
        image_shape = (self.channels, *self.stored_size)
        self._image_starts = [
            _data_offset(p, (int(n), *image_shape), np.dtype(np.uint8))
            for p, n in zip(self._images, counts)
        ]
        self._label_starts = [
            _data_offset(p, (int(n),), np.dtype("<i8")) for p, n in zip(self._label_files, counts)
        ]
        self._open: OrderedDict[int, tuple[int, int]] = OrderedDict()  # shard -> (fd, fd)

    @property
    def num_shards(self) -> int:
        return len(self._images)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def shard_of(self, index: int) -> int:
        """The shard that holds sample ``index``."""
        return bisect.bisect_right(self._starts, index) - 1

    def __getitem__(self, index: int) -> Sample:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[Sample]:
        """Samples ``indices``, read straight into one buffer (the DataLoader asks for a whole
        batch this way): one positioned read per image and per label."""
        n, (c, h, w) = len(indices), (self.channels, *self.stored_size)
        images = torch.empty((n, c, h, w), dtype=torch.uint8)
        labels = torch.empty(n, dtype=torch.int64)
        pixels, values = images.numpy().reshape(n, -1), labels.numpy()  # views to read into
        size = len(self)
        for j, index in enumerate(indices):
            if not 0 <= index < size:
                raise IndexError(f"sample {index} of {size}")
            shard = self.shard_of(index)
            row = index - self._starts[shard]
            images_fd, labels_fd = self._handles(shard)
            into = [pixels[j].data], [values[j : j + 1].data]  # writable views of the buffers
            got = os.preadv(images_fd, into[0], self._image_starts[shard] + row * self._record)
            got += os.preadv(labels_fd, into[1], self._label_starts[shard] + row * 8)
            if got != self._record + 8:
                raise UnreadableImageError(
                    f"shard file {self._images[shard]} ended early (changed since it was "
                    f"opened?); {REPACK}"
                )
        if self.image_size != self.stored_size:
            images = resize_images(images, self.image_size)
        return [{"image": x, "label": y} for x, y in zip(images.unbind(0), labels.unbind(0))]

    def _handles(self, shard: int) -> tuple[int, int]:
        """Open file descriptors of a shard's two files, the least recently used closed."""
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard]
        fds = []
        for path in (self._images[shard], self._label_files[shard]):
            try:
                fds.append(os.open(path, os.O_RDONLY))
            except OSError as e:
                for fd in fds:
                    os.close(fd)
                raise UnreadableImageError(
                    f"cannot open shard file {path} ({e.strerror}); {REPACK}"
                ) from None
        self._open[shard] = (fds[0], fds[1])
        while len(self._open) > MAX_OPEN_SHARDS:
            for fd in self._open.popitem(last=False)[1]:
                os.close(fd)
        return self._open[shard]

    def close(self) -> None:
        """Close the open shard files (reading again reopens them)."""
        while self._open:
            for fd in self._open.popitem()[1]:
                os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __getstate__(self) -> dict[str, Any]:  # file descriptors do not travel to workers
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state

    def epoch_order(self, seed: int, epoch: int) -> Iterator[np.ndarray]:
        """The epoch's sample order, one shuffle window at a time (see ``windowed_order``)."""
        return windowed_order(self._offsets, self.window, seed, epoch)

    def labels(self) -> Tensor:
        """Every label, int64 (N,), from the label files (no image is read)."""
        if not len(self):
            return torch.empty(0, dtype=torch.int64)
        return torch.from_numpy(np.concatenate([np.load(p) for p in self._label_files]))

    def as_tensor(self) -> Tensor:
        """Every image in one uint8 (N, C, H, W) tensor: the whole split in memory, meant for
        evaluating on a split that fits (training reads sample by sample)."""
        out = torch.empty((len(self), self.channels, *self.stored_size), dtype=torch.uint8)
        for s, path in enumerate(self._images):
            shard = np.load(path, mmap_mode="r")  # (n, C, H, W), read as it is copied
            out[self._offsets[s] : self._offsets[s + 1]].numpy()[...] = shard
        return resize_images(out, self.image_size)
