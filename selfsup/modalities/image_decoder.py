"""The image modality's decoder: a pooled embedding (B, D) back to a normalised image
(B, C, S, S), as the autoencoder reconstructs it (``Modality.decoder``)."""

from __future__ import annotations

import math

from torch import Tensor, nn


def upsamplings(size: int) -> int:
    """How many ×2 transposed convolutions grow the decoder's first map to ``size``: as many as
    keep that map at least 4 pixels wide (28 -> 7·2², 32 -> 4·2³, 8 -> 4·2¹, 3 -> 3·2⁰)."""
    return max(0, math.floor(math.log2(size / 4))) if size >= 4 else 0


class ImageDecoder(nn.Module):
    """Linear D -> (width, s, s), then ×2 transposed convolutions (4×4, stride 2) with ReLU,
    halving the channels each time (not below 16), and a 3×3 convolution to C channels; the
    map is cropped to S when S is not s·2ⁿ. DCGAN's generator shape, without BatchNorm, so a
    sample's reconstruction depends on nothing else in the batch. No output activation: the
    target is normalised pixels, which are not bounded to [0, 1]."""

    def __init__(self, embed_dim: int, channels: int, image_size: int, width: int = 64) -> None:
        super().__init__()
        steps = upsamplings(image_size)
        self.start = math.ceil(image_size / 2**steps)  # s
        self.image_size = image_size
        self.width = width
        self.project = nn.Linear(embed_dim, width * self.start**2)
        layers: list[nn.Module] = [nn.ReLU(inplace=True)]
        dim = width
        for _ in range(steps):
            out = max(16, dim // 2)
            layers += [nn.ConvTranspose2d(dim, out, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            dim = out
        layers.append(nn.Conv2d(dim, channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        s, size = self.start, self.image_size
        y = self.project(z).view(len(z), self.width, s, s)  # (B, width, s, s)
        return self.layers(y)[:, :, :size, :size]  # (B, C, S, S)
