"""A folder of video files: ``video:FOLDER[:frames=T][:stride=S][:size=N]``.

Every .mp4/.webm/.avi/.mkv/.mov under FOLDER is a clip (first-level subfolder = label, none
when the folder is flat). A sample is ``{"video": uint8 (T, C, H, W), "label": int64}``: T
frames ``stride`` apart, decoded with PyAV in the loader worker, each resized (shorter side to
``size``, area filter) and centre-cropped to ``size`` × ``size``; C is 1 when every clip is
stored grayscale, else 3 (RGB).

The defaults are VideoMAE's Kinetics sampling, 16 frames at stride 4 (about 2 s at 30 fps),
at 64 px for the CPU-sized ``video-vit-tiny`` (the paper crops 224). Pretraining takes a random
start in every access; evaluation the centred one, so features are the same in every run. A
clip shorter than ``(T - 1) · stride + 1`` frames repeats its last frame, as VideoMAE's loaders
do (``ssv2.py`` appends ``all_index[-1]`` until the clip is full); one with fewer than T
frames is bad input (one line, or skipped with ``--skip-bad``): repeating most of a clip's
frames would show a model motion that stops.

Each file's header and first frame are read when the data set is built: a file that is not a
video, is empty, has no video stream or no frame stops the run with one line naming it, or
with ``--skip-bad`` is left out and counted. A file is in the test split when a hash of its
relative path falls in the lowest 20%, as for audio folders.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.data.folder import list_files
from selfsup.data.split import in_test_split
from selfsup.errors import SelfsupError, UnreadableFileError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov")
TEST_FRACTION = 0.2
DEFAULTS = {"frames": 16, "stride": 4, "size": 64}
"""VideoMAE's 16 frames at stride 4; 64 px so that the CPU-sized encoder can train on it."""
SKIP_HINT = "pass --skip-bad to skip unreadable files"
USAGE = "video:FOLDER[:frames=T][:stride=S][:size=N]"
SEEK_FROM = 64
"""A clip starting this many frames or more into its video seeks rather than decodes there."""
GRAY_FORMATS = ("gray", "ya", "mono")
"""Pixel-format prefixes of clips stored without colour (``gray``, ``gray16le``, ``ya8``)."""


def av_module() -> Any:
    """PyAV, imported when a clip is first read; the install hint otherwise."""
    try:
        import av
    except ImportError:  # pragma: no cover - the extra is installed in CI
        raise SelfsupError("reading video files needs PyAV: `pip install selfsup[video]`") from None
    return av


class UnreadableVideoError(UnreadableFileError):
    """A clip PyAV cannot decode; one line even when raised in a loader worker."""


@dataclass(frozen=True)
class Sampling:
    """How each clip becomes T frames: ``frames`` of them ``stride`` apart, ``size`` px square."""

    frames: int
    stride: int
    size: int

    @property
    def span(self) -> int:
        """Frames from the first to the last one taken."""
        return (self.frames - 1) * self.stride + 1


def parse_folder_spec(
    argument: str, *, frames: int | None = None, image_size: int | None = None
) -> tuple[Path, Sampling]:
    """``FOLDER[:frames=T][:stride=S][:size=N]`` -> (folder, sampling). ``frames`` and
    ``image_size`` (an exported encoder's) stand in for options the spec leaves out."""
    parts = argument.split(":")
    given: dict[str, int] = {}
    while parts and "=" in parts[-1]:
        key, _, value = parts.pop().partition("=")
        key = key.strip().lower()
        if key not in DEFAULTS:
            raise SelfsupError(f"unknown video option {key!r}; use {USAGE}")
        if not value.strip().isdigit() or int(value) < 1:
            raise SelfsupError(f"video option {key}={value.strip()!r} must be a positive integer")
        given[key] = int(value)
    fallback = {**DEFAULTS, **_known(frames=frames, size=image_size)}
    chosen = {key: given.get(key, fallback[key]) for key in DEFAULTS}
    return Path(":".join(parts).strip()).expanduser(), Sampling(**chosen)


def _known(**values: int | None) -> dict[str, int]:
    return {key: int(value) for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class ClipHeader:
    """What the build-time check learns of a file without decoding it all."""

    gray: bool
    frames: int
    """Frame count from the container (0 when it does not say)."""


def read_header(path: Path, key: str) -> ClipHeader | str:
    """The clip's header and first frame, or why it cannot be used (one line)."""
    av = av_module()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return f"{key} has no video stream"
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                return f"video {key} holds no frames"
            count = _frame_count(stream, container.duration)
            return ClipHeader(first.format.name.startswith(GRAY_FORMATS), count)
    except av.error.FFmpegError as error:
        return f"cannot read video {key}: {error.strerror or error}"


def _frame_count(stream: Any, container_duration: int | None) -> int:
    """Frames in the stream: its count, else duration × rate (webm and mkv keep no count, and
    their duration is the container's, in microseconds)."""
    if stream.frames:
        return int(stream.frames)
    seconds = (
        float(stream.duration * stream.time_base)
        if stream.duration and stream.time_base
        else (container_duration or 0) / 1_000_000
    )
    return int(round(seconds * float(stream.average_rate or 0)))


def frame_indices(count: int, sampling: Sampling, *, random_start: bool) -> list[int]:
    """Which frames to take: ``frames`` of them ``stride`` apart from a random start (in
    [0, count - span]) or the centred one; indices past the end are decoded as the last
    frame. ``count`` 0 (unknown) starts at 0."""
    room = max(0, count - sampling.span)
    start = int(torch.randint(0, room + 1, ()).item()) if random_start else room // 2
    return [start + k * sampling.stride for k in range(sampling.frames)]


def decode_clip(path: Path, indices: list[int], size: int, channels: int) -> Tensor:
    """uint8 (T, C, size, size): the frames at ``indices`` (increasing), each resized and
    centre-cropped; an index past the clip's end takes its last frame."""
    av = av_module()
    pictures: list[Tensor] = []
    last = None
    try:
        with av.open(str(path)) as container:
            for index, frame in _numbered_frames(container, indices[0]):
                last, picture = frame, None
                while len(pictures) < len(indices) and index >= indices[len(pictures)]:
                    picture = picture if picture is not None else _picture(frame, size, channels)
                    pictures.append(picture)
                if len(pictures) == len(indices):
                    break
    except av.error.FFmpegError as error:
        raise UnreadableVideoError(
            f"cannot decode video {path}: {error.strerror or error}; {SKIP_HINT}"
        ) from None
    if last is None:
        raise UnreadableVideoError(f"video {path} holds no frames; {SKIP_HINT}")
    if len(pictures) < len(indices):  # past the end: the last frame, repeated
        pictures += [_picture(last, size, channels)] * (len(indices) - len(pictures))
    return torch.stack(pictures)


def _numbered_frames(container: Any, first: int) -> Iterator[tuple[int, Any]]:
    """(index, frame) of the first video stream, from at or before frame ``first`` on.

    With a frame rate and timestamps the index is the frame's time × the rate, and a clip
    starting ``SEEK_FROM`` frames or more in seeks to the keyframe before it (a long video
    costs its clip, not its length); otherwise frames are counted from the start.
    """
    stream = container.streams.video[0]
    rate, time_base, origin = stream.average_rate, stream.time_base, stream.start_time or 0
    timed = bool(rate and time_base)
    if timed and first >= SEEK_FROM:
        container.seek(origin + int(first / (rate * time_base)), stream=stream)
    index = -1
    for frame in container.decode(stream):
        if timed and frame.pts is not None:
            index = round(float((frame.pts - origin) * time_base * rate))
        else:
            index += 1
        yield index, frame


def _picture(frame: Any, size: int, channels: int) -> Tensor:
    """uint8 (C, size, size): shorter side resized to ``size``, the centre kept."""
    scale = size / min(frame.width, frame.height)
    width = max(size, round(frame.width * scale))
    height = max(size, round(frame.height * scale))
    # resized in the stored format, then converted: swscale doing both at once darkens the
    # picture by about 2 levels in 255 (a flat gray of 50 comes back as 48)
    resized = frame.reformat(width=width, height=height, interpolation="AREA")
    image = resized.reformat(format="gray" if channels == 1 else "rgb24").to_ndarray()
    top, left = (height - size) // 2, (width - size) // 2
    image = image[top : top + size, left : left + size]
    image = image[..., None] if image.ndim == 2 else image
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


class VideoFolder(Dataset[dict[str, Tensor]]):
    """Video files, each decoded when it is read (in a loader worker) into
    ``{"video": uint8 (T, C, H, W), "label": int64}``. Every header and first frame is read
    here: a bad file stops the build with its name, or with ``skip_bad`` lands in ``skipped``."""

    input_key = "video"
    in_memory = False

    def __init__(
        self,
        root: Path,
        keys: list[str],
        labels: list[int] | None,
        class_names: list[str],
        sampling: Sampling,
        *,
        name: str,
        split: str,
        skip_bad: bool = False,
        random_start: bool = False,
    ) -> None:
        self.name, self.split, self.sampling = name, split, sampling
        self.random_start = random_start
        """Pretraining draws each clip's start anew; evaluation takes the centred one."""
        self.skipped: list[str] = []
        keep, headers = [], []
        for i, key in enumerate(keys):
            header = read_header(root / key, key)
            if isinstance(header, ClipHeader) and 0 < header.frames < sampling.frames:
                header = (  # too few frames to repeat into a clip without faking time
                    f"video {key} has {header.frames} frames, fewer than the {sampling.frames} "
                    "of a clip (:frames=T takes fewer)"
                )
            if isinstance(header, ClipHeader):
                keep.append(i)
                headers.append(header)
            elif skip_bad:
                self.skipped.append(key)
            else:
                raise SelfsupError(f"{header}; {SKIP_HINT}")
        if keys and not keep:
            raise SelfsupError(f"{name!r} has no readable clip in its {split} split")
        self.paths = [root / keys[i] for i in keep]
        self.keys = [keys[i] for i in keep]
        self.counts = [h.frames for h in headers]
        self.has_labels = labels is not None
        kept = [labels[i] for i in keep] if labels is not None else [-1] * len(keep)
        self._labels = torch.tensor(kept, dtype=torch.long)
        self.class_names = class_names
        self.frames, self.image_size = sampling.frames, sampling.size
        self.channels = 1 if all(h.gray for h in headers) else 3

    def __len__(self) -> int:
        return len(self.paths)

    def labels(self) -> Tensor:
        """int64 (N,); -1 everywhere for unlabelled clips."""
        return self._labels

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        indices = frame_indices(self.counts[index], self.sampling, random_start=self.random_start)
        clip = decode_clip(self.paths[index], indices, self.sampling.size, self.channels)
        return {"video": clip, "label": self._labels[index]}


def load_folder(
    argument: str,
    spec: str,
    split: str,
    *,
    skip_bad: bool = False,
    random_start: bool = False,
    frames: int | None = None,
    image_size: int | None = None,
) -> VideoFolder:
    """One split of ``video:FOLDER[:options]`` (see the module docstring)."""
    root, sampling = parse_folder_spec(argument, frames=frames, image_size=image_size)
    keys = list_files(root, VIDEO_EXTENSIONS) if root.is_dir() else []
    if not keys:
        raise SelfsupError(
            f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {root}; or pass a .npy/.npz "
            "array of clips"
        )
    nested = all("/" in key for key in keys)
    class_names = sorted({key.split("/")[0] for key in keys}) if nested else []
    keys = [k for k in keys if in_test_split(k, TEST_FRACTION) == (split == "test")]
    if not keys and (nested or split == "train"):
        raise SelfsupError(f"{spec!r} has no video files in its {split} split")
    # a few unlabelled clips may leave test empty: nothing to evaluate, as for any unlabelled data
    labels = [class_names.index(key.split("/")[0]) for key in keys] if nested else None
    return VideoFolder(
        root,
        keys,
        labels,
        class_names,
        sampling,
        name=spec,
        split=split,
        skip_bad=skip_bad,
        random_start=random_start,
    )
