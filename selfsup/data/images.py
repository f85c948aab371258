"""The image dataset contract and the in-memory dataset that digits, Fashion-MNIST and npz share.

Every image source yields samples ``{"image": uint8 (C, H, W), "label": int64 scalar}``; the
label is -1 when the source has no labels. Sources that hold all their pixels in memory are
``TensorImageDataset``s and also hand out the whole array (``as_tensor``) so feature
extraction and small-data training can batch by slicing, without loader workers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

Sample = dict[str, Tensor]
"""``{"image": uint8 (C, H, W), "label": int64 scalar}``."""

UNLABELLED = -1
"""The label a sample carries when its source has no labels."""


class ImageDataset(Dataset[Sample]):
    """What every image source is: sized, indexable, and described well enough to build a model.

    Attributes:
        name: the data spec it was loaded from, e.g. ``"fashion-mnist"`` or ``"folder:/photos"``.
        split: ``"train"`` or ``"test"``.
        channels: C of every image, 1 (grayscale) or 3 (RGB).
        image_size: (H, W) of every image.
        num_classes: number of classes, 0 when the source has no labels.
        class_names: one name per class index (empty when unlabelled).
        has_labels: whether samples carry real labels (else every label is -1).
        in_memory: True when ``as_tensor`` is a free view rather than a full decode.
        skipped: files dropped as unreadable (only a folder with ``skip_bad`` fills it).
    """

    name: str
    split: str
    channels: int
    image_size: tuple[int, int]
    num_classes: int
    class_names: list[str]
    has_labels: bool
    in_memory: bool = False
    input_key = "image"
    """The batch key of the input (the image modality's)."""
    skipped: list[str]

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        raise NotImplementedError

    def labels(self) -> Tensor:
        """Every sample's label as an int64 tensor (N,), -1 where unlabelled; nothing is decoded."""
        raise NotImplementedError

    def as_tensor(self) -> Tensor:
        """Every image as one uint8 tensor (N, C, H, W)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        c, (h, w) = self.channels, self.image_size
        labels = f"{self.num_classes} classes" if self.has_labels else "unlabelled"
        return f"{type(self).__name__}({self.name!r}, {self.split}, {len(self)} x {c}x{h}x{w}, {labels})"


class TensorImageDataset(ImageDataset):
    """Images already decoded into one uint8 tensor (N, C, H, W), with optional labels.

    Indexing returns views into that tensor, so samples are free and the dataset pickles to
    loader workers cheaply on Linux (fork shares the memory).
    """

    in_memory = True

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | None,
        *,
        name: str,
        split: str,
        class_names: list[str] | None = None,
    ) -> None:
        """Wrap ``images`` (uint8 (N, C, H, W)) and ``labels`` (int64 (N,) or None for unlabelled).

        ``class_names`` defaults to ``["0", "1", ...]`` up to the largest label.
        """
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        n = images.shape[0]
        if labels is not None and labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        self._images = images
        self.has_labels = labels is not None
        self._labels = (
            labels.to(torch.int64)
            if labels is not None
            else torch.full((n,), UNLABELLED, dtype=torch.int64)
        )
        if self.has_labels:
            names = list(class_names) if class_names is not None else []
            num_classes = int(self._labels.max()) + 1 if n else 0
            names += [str(i) for i in range(len(names), num_classes)]
            self.class_names = names
            self.num_classes = len(names)
        else:
            self.class_names = []
            self.num_classes = 0
        self.name = name
        self.split = split
        self.channels = int(images.shape[1])
        self.image_size = (int(images.shape[2]), int(images.shape[3]))
        self.skipped = []

    def __len__(self) -> int:
        return self._images.shape[0]

    def __getitem__(self, index: int) -> Sample:
        return {"image": self._images[index], "label": self._labels[index]}

    def labels(self) -> Tensor:
        """Every label, int64 (N,); -1 everywhere when unlabelled."""
        return self._labels

    def as_tensor(self) -> Tensor:
        """All images, uint8 (N, C, H, W): shared with the dataset (and its cache), so don't
        modify it in place."""
        return self._images


def cover_crop_box(
    width: int, height: int, target: tuple[int, int]
) -> tuple[float, float, float, float]:
    """The centred (left, top, right, bottom) region of a width x height image with the
    aspect ratio of ``target`` = (H, W): the largest such region, which scaling then maps
    exactly onto the target ("resize the shorter side, centre-crop the rest")."""
    th, tw = target
    if width * th > height * tw:  # wider than the target: crop the sides
        crop_w, crop_h = height * tw / th, float(height)
    else:  # taller (or equal): crop top and bottom
        crop_w, crop_h = float(width), width * th / tw
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return left, top, left + crop_w, top + crop_h


def resize_images(images: Tensor, target: tuple[int, int], chunk_size: int = 4096) -> Tensor:
    """Resize uint8 (N, C, H, W) to (N, C, *target): centre-crop to the target's aspect ratio,
    then antialiased bilinear resampling, in chunks so large sets stay within memory."""
    n, c, h, w = images.shape
    if (h, w) == tuple(target):
        return images
    left, top, right, bottom = cover_crop_box(w, h, target)
    x0, y0 = round(left), round(top)
    x1, y1 = max(round(right), x0 + 1), max(round(bottom), y0 + 1)
    shrink = target[0] < y1 - y0 or target[1] < x1 - x0  # antialiasing only matters downwards
    out = torch.empty((n, c, *target), dtype=torch.uint8)
    for start in range(0, n, chunk_size):
        chunk = images[start : start + chunk_size, :, y0:y1, x0:x1].float()  # (B, C, h', w')
        resized = F.interpolate(
            chunk, size=target, mode="bilinear", antialias=shrink, align_corners=False
        )
        out[start : start + chunk_size] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out
