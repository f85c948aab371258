"""A ViT over space-time cubes (VideoMAE's encoder; Tong et al., NeurIPS 2022, arXiv:2203.12602).

A clip (B, T, C, H, W) is cut into cubes of ``tubelet`` frames × ``patch``² pixels
(``cubify``) and each cube is projected linearly (what a ``Conv3d`` with that kernel and
stride computes, without a 5-D weight that channels-last conversion refuses); the
N = (T / tubelet)·(H / patch)² cube tokens get
learned position embeddings and run through the pre-LN blocks shared with the image ViT.
Tokens are ordered time-major: token n = t'·S + s for temporal slice t' and spatial patch s
(S = (H / patch)², row-major), so a tube mask is a spatial mask repeated over t'.
There is no CLS token: the clip's feature is the mean of its normalised tokens, as in VideoMAE.
``forward_tokens(x, mask)`` drops hidden cubes before the blocks (True = hidden).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.encoders.transformer import Block, drop_hidden
from selfsup.errors import SelfsupError
from selfsup.losses.mae import cubify


class VideoTransformer(nn.Module):
    """Space-time ViT: (B, T, C, H, W) -> (B, D) pooled, or (B, N, D) cube tokens.

    Args:
        in_channels: channels C of a frame.
        image_size: side of the square frames; divisible by ``patch_size``.
        frames: frames T per clip; divisible by ``tubelet``.
        patch_size: spatial side of a cube (4 for 32 px frames: 64 patches per slice).
        tubelet: frames per cube (VideoMAE's 2).
        embed_dim, depth, num_heads, mlp_ratio: as the image ViT.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 32,
        frames: int = 8,
        patch_size: int = 4,
        tubelet: int = 2,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if patch_size < 1 or image_size % patch_size:
            raise SelfsupError(f"patch_size {patch_size} does not divide image_size {image_size}")
        if tubelet < 1 or frames % tubelet:
            raise SelfsupError(f"tubelet {tubelet} does not divide the {frames} frames of a clip")
        if embed_dim % num_heads:
            raise SelfsupError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim: int = embed_dim
        self.patch_size, self.tubelet, self.frames = patch_size, tubelet, frames
        self.grid_size = image_size // patch_size
        self.spatial_patches = self.grid_size**2
        self.num_patches: int = (frames // tubelet) * self.spatial_patches
        self.patch_embed = nn.Linear(tubelet * patch_size**2 * in_channels, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
                nn.init.zeros_(module.bias)

    def forward_tokens(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, T, C, H, W) -> (B, N', D) normalised cube tokens, time-major; ``mask`` (B, N)
        bool drops the hidden cubes (every row must hide the same number)."""
        if x.ndim != 5 or x.shape[1] != self.frames:
            raise SelfsupError(
                f"the video encoder reads clips (B, {self.frames}, C, H, W), got {tuple(x.shape)}"
            )
        cubes = cubify(x, self.tubelet, self.patch_size)  # (B, N, tubelet·patch²·C)
        tokens = self.patch_embed(cubes) + self.pos_embed  # (B, N, D)
        if mask is not None:
            tokens = drop_hidden(tokens, mask, "cubes")  # (B, N_visible, D)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C, H, W) -> (B, D): the mean of the normalised cube tokens."""
        return self.forward_tokens(x).mean(dim=1)
