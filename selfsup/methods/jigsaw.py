"""Jigsaw: cut each image into a 3×3 grid, shuffle the tiles by one of a fixed set of
permutations, encode every tile with the shared encoder, and classify which permutation it was.

Noroozi & Favaro. "Unsupervised Learning of Visual Representations by Solving Jigsaw
Puzzles." ECCV 2016. arXiv:1603.09246.

Small images: a 28 px image makes 9 px cells. The view resamples every image to
grid × cell pixels (cells of at least ``MIN_CELL`` = 8 px, so 8 px digits are puzzled from
a 24 px upsampling), and each tile is a random ``tile_fraction`` crop of its cell (8 px of
9), fed to the encoder at that size: the built-in convnets and ResNets take any size, so
tiles need no padding. An encoder with a fixed input size gets ``tile_size`` instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.heads import mlp
from selfsup.views import ImageAugment, ImageViews, prepare
from selfsup.views.jigsaw import JigsawTiles, maximal_hamming_permutations

MIN_CELL = 8
"""Smallest default cell side in pixels; smaller images are upsampled to reach it."""


def _light_augment() -> ImageAugment:
    """Random crop and flip only: the puzzle itself is the pretext."""
    return ImageAugment(paper_crop_scale=(0.5, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)


@dataclass
class JigsawConfig:
    """Jigsaw's hyperparameters: the paper's 3×3 grid, a smaller permutation set for small data."""

    grid: int = 3
    """Tiles per side: 3 (9 tiles) is the paper's; 2 gives an easy 24-way puzzle."""
    num_permutations: int = 100
    """Size of the permutation set = classes of the pretext task. The paper's best is 1000
    (its Table 3, ImageNet); 100 suits data of tens of thousands of images; fewer makes the
    task easier and the features weaker."""
    permutation_seed: int = 0
    """Seed of the greedy maximal-Hamming selection (the set is cached on disk)."""
    cell_size: int | None = None
    """Side of a grid cell in pixels; None = image side // grid, at least 8."""
    tile_fraction: float = 0.85
    """Each tile is a random crop of this share of its cell's side (the paper: 64 of 75 px),
    so edges do not line up across tiles; 1.0 turns the gaps off."""
    tile_size: int | None = None
    """Resize tiles to this side before the encoder; None feeds them at their own size,
    which the built-in convnets and ResNets accept. Set it to the encoder's image size for
    encoders with a fixed input size."""
    hidden_dim: int = 1024
    """Width of the MLP that reads the concatenated tile features (paper: 4096)."""
    augment: ImageAugment | None = field(default_factory=_light_augment)
    """Random crop + flip before cutting the puzzle; null turns it off."""

    def validate(self) -> None:
        if self.grid < 2:
            raise SelfsupError(f"grid must be 2 or more tiles per side, got {self.grid}")
        if self.num_permutations < 2:
            raise SelfsupError(f"num_permutations must be 2 or more, got {self.num_permutations}")
        if not 0 < self.tile_fraction <= 1:
            raise SelfsupError(f"tile_fraction must lie in (0, 1], got {self.tile_fraction}")
        for name in ("cell_size", "tile_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SelfsupError(f"{name} must be a positive number of pixels, got {value}")


class Jigsaw(nn.Module):
    def __init__(self, cfg: JigsawConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        self.channels_last = info.channels_last
        cell = cfg.cell_size or max(info.image_size // cfg.grid, MIN_CELL)
        self.side = cfg.grid * cell  # images are resampled to this before cutting
        tile = max(1, round(cfg.tile_fraction * cell))
        try:
            permutations = maximal_hamming_permutations(
                cfg.grid**2, cfg.num_permutations, cfg.permutation_seed
            )
        except ValueError as error:
            raise SelfsupError(f"jigsaw: {error} (method_args.num_permutations)") from None
        self.puzzle = JigsawTiles(cfg.grid, cell, tile, permutations)
        self.views = (
            ImageViews(
                info.channels,
                info.image_size,
                dataclasses.replace(cfg.augment, output_size=self.side),
                1,
                channels_last=False,
            )
            if cfg.augment is not None
            else None
        )
        tiles = cfg.grid**2
        self.head = mlp(tiles * encoder.embed_dim, cfg.hidden_dim, cfg.num_permutations)

    def _images(self, images: Tensor) -> Tensor:
        """uint8 (B, C, H, W) -> normalised float (B, C, side, side)."""
        if self.views is not None:
            return self.views(images)[0]
        x = prepare(images, channels_last=False)
        if x.shape[-1] != self.side or x.shape[-2] != self.side:
            x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", antialias=True)
        return x

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tiles, labels = self.puzzle(self._images(batch["image"]))  # (B, N, C, T, T), (B,)
        b, n = tiles.shape[:2]
        x = tiles.flatten(0, 1)  # (B·N, C, T, T)
        if self.cfg.tile_size is not None and x.shape[-1] != self.cfg.tile_size:
            x = F.interpolate(x, size=(self.cfg.tile_size,) * 2, mode="bilinear")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.encoder(x).reshape(b, n, -1)  # (B, N, D)
        logits = self.head(h.flatten(1))  # (B, K)
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return {"loss": loss, "features": h.mean(dim=1).detach(), "jigsaw_acc": accuracy.detach()}

    def on_step_end(self, progress: float) -> None:
        """Jigsaw has no schedule of its own."""
