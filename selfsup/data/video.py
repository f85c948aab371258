"""Video: ``{"video": uint8 (T, C, H, W)}`` clips.

Specs:
    moving-fashion-mnist[:LABEL]   clips made here from the real Fashion-MNIST images (Debian
                                   ``dataset-fashion-mnist``), the Moving MNIST recipe: one
                                   garment, shrunk to 16 px, moves over a black 32 px canvas
                                   in one of 8 directions at 1-2 px per frame, bouncing off the
                                   edges; 8 frames. LABEL is ``garment`` (default, 10 classes)
                                   or ``direction`` (the first frame's direction of motion, 8
                                   classes: E, NE, N, ... clockwise from east counter-clockwise)
    video:PATH                     your own clips as a ``.npy``/``.npz`` array (N, T, H, W[, C])
                                   uint8, optional labels ``y``; test from ``x_test`` or a
                                   seeded 80/20 split
    video:FOLDER[:frames=T][:stride=S][:size=N]
                                   a folder of .mp4/.webm/.avi/.mkv/.mov files decoded with
                                   PyAV in the loader workers, subfolder = label
                                   (``selfsup.data.clips``; 16 frames at stride 4, 64 px)

Direction cannot be read from any single frame, so the direction probe tells whether a
representation learned time. The clips are made once per split with a fixed seed (train:
6,000 clips from the first training images; test: 2,000 from the test images), so every run
sees the same data.
"""

from __future__ import annotations

import functools
import math
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.errors import SelfsupError

if TYPE_CHECKING:
    from selfsup.data.clips import VideoFolder

Split = Literal["train", "test"]

VIDEO_SOURCES: dict[str, str] = {
    "moving-fashion-mnist": (
        "moving Fashion-MNIST: 6,000 train / 2,000 test clips of 8 frames at 32 px made from "
        "the real images, one garment bouncing in one of 8 directions; moving-fashion-mnist"
        "[:garment|:direction] picks the label; `apt-get install dataset-fashion-mnist`"
    ),
    "video": (
        "your own clips, video:PATH: a .npy/.npz uint8 array (N, T, H, W[, C]) with optional "
        "labels 'y' (and x_test/y_test), or a folder of .mp4/.webm/.avi/.mkv/.mov files "
        "(subfolder = label) sampled as video:FOLDER:frames=16:stride=4:size=64; `pip install "
        "selfsup[video]`"
    ),
}

FRAMES, CANVAS, GARMENT = 8, 32, 16
CLIPS = {"train": 6000, "test": 2000}
DIRECTIONS = ("E", "NE", "N", "NW", "W", "SW", "S", "SE")
"""Direction k moves by angle k·45° counter-clockwise from east (image rows grow downwards)."""
SEEDS = {"train": 0, "test": 1}
LABELS = ("garment", "direction")


class VideoDataset(Dataset[dict[str, Tensor]]):
    """In-memory clips uint8 (N, T, C, H, W) and labels (N,)."""

    input_key = "video"
    in_memory = True

    def __init__(
        self,
        clips: Tensor,
        labels: Tensor | None,
        *,
        name: str,
        split: Split,
        class_names: list[str] | None = None,
    ) -> None:
        if clips.ndim != 5 or clips.dtype != torch.uint8 or len(clips) == 0:
            raise SelfsupError(f"{name} ({split}) holds no uint8 clips (N, T, C, H, W)")
        self._clips = clips
        self.has_labels = labels is not None
        self._labels = labels if labels is not None else torch.full((len(clips),), -1)
        self.class_names = list(class_names or [])
        self.name, self.split = name, split
        self.frames, self.channels = int(clips.shape[1]), int(clips.shape[2])
        self.image_size = int(clips.shape[3])
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self._clips)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"video": self._clips[index], "label": self._labels[index]}

    def labels(self) -> Tensor:
        """Every label, int64 (N,); -1 everywhere when unlabelled (as images)."""
        return self._labels

    def as_tensor(self) -> Tensor:
        return self._clips


def load_video(
    spec: str,
    split: Split = "train",
    *,
    skip_bad: bool = False,
    random_start: bool = False,
    frames: int | None = None,
    image_size: int | None = None,
) -> VideoDataset | VideoFolder:
    """One split of the video source ``spec`` (see the module docstring). The keywords are for
    folders of video files: leave out unreadable ones, draw each clip's start at random
    (pretraining) rather than centred, and the frames and size an encoder was trained on
    where the spec does not say."""
    if split not in ("train", "test"):
        raise SelfsupError(f"unknown split {split!r}; use 'train' or 'test'")
    prefix, _, argument = spec.partition(":")
    prefix, argument = prefix.strip().lower(), argument.strip().lower()
    if prefix == "moving-fashion-mnist":
        label = argument or "garment"
        if label not in LABELS:
            raise SelfsupError(
                f"moving-fashion-mnist labels are {' or '.join(LABELS)}, not {label!r}"
            )
        clips, garments, directions = moving_fashion_mnist(split)
        labels, names = (garments, None) if label == "garment" else (directions, list(DIRECTIONS))
        if names is None:
            from selfsup.data.idx import CLASS_NAMES

            names = list(CLASS_NAMES)
        return VideoDataset(clips, labels, name=spec, split=split, class_names=names)
    if prefix == "video":
        argument = spec.partition(":")[2].strip()
        if Path(argument.split(":")[0]).expanduser().is_dir():
            from selfsup.data.clips import load_folder

            return load_folder(
                argument,
                spec,
                split,
                skip_bad=skip_bad,
                random_start=random_start,
                frames=frames,
                image_size=image_size,
            )
        return _array_clips(Path(argument).expanduser(), spec, split)
    raise SelfsupError(f"unknown video source {spec!r}; use moving-fashion-mnist or video:PATH")


@functools.lru_cache(maxsize=2)
def moving_fashion_mnist(split: Split) -> tuple[Tensor, Tensor, Tensor]:
    """Clips uint8 (N, T, 1, 32, 32), garment labels (N,) and direction labels (N,)."""
    from selfsup.data.idx import load_fashion_mnist

    images, garments = load_fashion_mnist(None, split)
    n = CLIPS[split]
    small = F.interpolate(
        images[:n].float(), size=(GARMENT, GARMENT), mode="area"
    )  # (N, 1, 16, 16)
    rng = np.random.default_rng(SEEDS[split])
    directions = rng.integers(0, len(DIRECTIONS), n)
    speeds = rng.uniform(1.0, 2.0, n)
    room = CANVAS - GARMENT
    starts = rng.uniform(0, room, (n, 2))  # (row, column) of the top-left corner
    clips = torch.zeros(n, FRAMES, 1, CANVAS, CANVAS)
    for i in range(n):
        angle = directions[i] * math.pi / 4
        velocity = speeds[i] * np.array([-math.sin(angle), math.cos(angle)])  # rows grow down
        position = starts[i].copy()
        for t in range(FRAMES):
            r, c = (int(round(v)) for v in position)
            clips[i, t, :, r : r + GARMENT, c : c + GARMENT] = small[i]
            position, velocity = _bounce(position + velocity, velocity, room)
    return clips.round().to(torch.uint8), garments[:n].clone(), torch.from_numpy(directions)


def _bounce(
    position: np.ndarray, velocity: np.ndarray, room: float
) -> tuple[np.ndarray, np.ndarray]:
    """Reflect a position that left [0, room] back inside, reversing that axis' velocity."""
    position, velocity = position.copy(), velocity.copy()
    for axis in range(2):
        if position[axis] < 0:
            position[axis], velocity[axis] = -position[axis], -velocity[axis]
        elif position[axis] > room:
            position[axis], velocity[axis] = 2 * room - position[axis], -velocity[axis]
    return position, velocity


def _array_clips(path: Path, spec: str, split: Split) -> VideoDataset:
    """Clips (N, T, H, W[, C]) uint8 under ``x`` (or a bare .npy), labels under ``y``."""
    if not path.is_file():
        raise SelfsupError(f"video file {path} does not exist; check the path after video:")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise SelfsupError(f"cannot read {path} as .npy/.npz ({error})") from None
    if isinstance(loaded, np.ndarray):
        arrays = {"x": loaded}
    else:
        with loaded:
            arrays = {k: loaded[k] for k in loaded.files}
    if "x" not in arrays:
        raise SelfsupError(f"{path} holds {', '.join(arrays)}: name the clips 'x' (labels 'y')")
    x, y = arrays["x"], arrays.get("y")
    if "x_test" in arrays:
        if split == "test":
            x, y = arrays["x_test"], arrays.get("y_test")
    else:
        order = np.random.default_rng(0).permutation(len(x))
        n_test = int(round(0.2 * len(x)))
        keep = np.sort(order[:n_test] if split == "test" else order[n_test:])
        x, y = x[keep], (y[keep] if y is not None else None)
    if x.ndim == 4:
        x = x[..., None]
    if x.ndim != 5 or x.dtype != np.uint8:
        raise SelfsupError(
            f"{path}: clips must be uint8 (N, T, H, W[, C]), got {x.dtype} {x.shape}"
        )
    clips = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 1, 4, 2, 3).contiguous()
    labels = torch.from_numpy(y.astype(np.int64)) if y is not None else None
    return VideoDataset(clips, labels, name=spec, split=split)
