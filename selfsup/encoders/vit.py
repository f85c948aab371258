"""Vision Transformer (Dosovitskiy et al. 2021) with MAE-style patch dropping.

Pre-LN blocks (shared with the text Transformer), learned position embeddings and a CLS
token, as in DINO and MAE. ``forward_tokens(x, mask)`` drops hidden patches before the
blocks, so an MAE encoder only pays for the visible 25%; ``keep_masked=True`` instead
swaps them for a learned mask token (SimMIM, BEiT, data2vec). Inputs of another size than
``image_size`` (DINO's local crops) get bicubically interpolated position embeddings.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from selfsup.encoders.transformer import Attention, Block, check_mask, drop_hidden
from selfsup.errors import SelfsupError

__all__ = ["Attention", "Block", "PoolKind", "VisionTransformer"]

PoolKind = Literal["cls", "mean"]


class VisionTransformer(nn.Module):
    """ViT encoder: (B, C, H, W) -> (B, D) pooled, or (B, 1 + N, D) tokens with CLS first.

    Args:
        in_channels: image channels C.
        image_size: side of the square training images; must be divisible by patch_size.
        patch_size: side of a patch; 4 suits 28-32 px images (49-64 patches), 2 suits 8 px.
        embed_dim: token width D (192 tiny, 384 small).
        depth: number of blocks (12 in the paper sizes; 2-6 is plenty for tiny data).
        num_heads: attention heads; embed_dim must be divisible by it (64 per head is usual).
        mlp_ratio: hidden width of the MLP relative to D; 4 as in the paper.
        pool: "cls" returns the CLS token after the final norm (DINO, linear probes);
            "mean" averages the normalised patch tokens (often better for MAE features).
        grad_checkpointing: recompute blocks in the backward pass while training; saves
            activation memory for long sequences at about 30% more compute.

    ``mask_token`` (D,) is the learned embedding of a hidden patch for
    ``forward_tokens(x, mask, keep_masked=True)``. It starts at zero, so a seeded ViT draws
    the same weights as before the mask token existed, and state dicts saved without it
    still load (it keeps its current value).
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 32,
        patch_size: int = 4,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        pool: PoolKind = "cls",
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if patch_size < 1 or image_size % patch_size != 0:
            raise SelfsupError(
                f"patch_size {patch_size} does not divide image_size {image_size}: "
                f"pick a patch size that divides {image_size} (e.g. "
                f"{_divisors_hint(image_size)})"
            )
        if embed_dim % num_heads != 0:
            raise SelfsupError(
                f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}: "
                "use heads of width 64 (e.g. embed_dim 384 with 6 heads)"
            )
        if pool not in ("cls", "mean"):
            raise SelfsupError(f"unknown pool {pool!r}: use 'cls' or 'mean'")
        self.embed_dim: int = embed_dim
        self.patch_size = patch_size
        self.grid_size = image_size // patch_size
        self.num_patches: int = self.grid_size**2
        self.pool: PoolKind = pool
        self.grad_checkpointing = grad_checkpointing

        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        """Truncated-normal(0.02) tokens and linears, Xavier patch projection (as in MAE)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(self.cls_token, std=0.02, a=-0.04, b=0.04)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.embed_dim, -1))
        assert self.patch_embed.bias is not None
        nn.init.zeros_(self.patch_embed.bias)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
                nn.init.zeros_(module.bias)

    def _position_embedding(self, grid_h: int, grid_w: int) -> Tensor:
        """(1, 1 + grid_h·grid_w, D) position embeddings, resized bicubically if the grid differs."""
        if (grid_h, grid_w) == (self.grid_size, self.grid_size):
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = patch_pos.reshape(1, self.grid_size, self.grid_size, self.embed_dim)
        grid = grid.permute(0, 3, 1, 2)  # (1, D, g, g)
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        patch_pos = grid.flatten(2).transpose(1, 2)  # (1, grid_h·grid_w, D)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def _embed(self, x: Tensor, mask: Tensor | None, keep_masked: bool = False) -> Tensor:
        """(B, C, H, W) -> (B, 1 + N', D): patches, mask tokens or dropping, positions, CLS."""
        if x.ndim != 4 or x.shape[2] % self.patch_size or x.shape[3] % self.patch_size:
            raise SelfsupError(
                f"ViT input of shape {tuple(x.shape)} does not split into "
                f"{self.patch_size}×{self.patch_size} patches: give (B, C, H, W) images "
                f"with H and W multiples of {self.patch_size}"
            )
        B = x.shape[0]
        grid_h, grid_w = x.shape[2] // self.patch_size, x.shape[3] // self.patch_size
        pos = self._position_embedding(grid_h, grid_w)  # (1, 1 + N, D)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        N = tokens.shape[1]
        swap = check_mask(mask, B, N) if mask is not None and keep_masked else None
        if swap is None:  # nothing swapped; kept in the graph so DDP sees every parameter used
            swap = torch.zeros(B, N, dtype=torch.bool, device=tokens.device)
        tokens = torch.where(swap[..., None], self.mask_token.to(tokens.dtype), tokens)
        tokens = tokens + pos[:, 1:]
        if mask is not None and not keep_masked:
            tokens = drop_hidden(tokens, mask)  # (B, N_visible, D)
        cls = (self.cls_token + pos[:, :1]).expand(B, -1, -1)  # (B, 1, D)
        return torch.cat([cls, tokens], dim=1)  # (B, 1 + N', D)

    def _run_block(self, block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """-> (block output, its feed-forward branch), recomputed in backward if asked."""
        assert isinstance(block, Block)
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block.forward_with_ffn, x, use_reentrant=False)
        return block.forward_with_ffn(x)

    def forward_tokens(
        self, x: Tensor, mask: Tensor | None = None, keep_masked: bool = False
    ) -> Tensor:
        """(B, C, H, W) -> (B, 1 + N', D) normalised tokens, CLS first.

        ``mask`` is an optional bool (B, N) tensor, True = patch hidden. By default hidden
        patches are dropped before the blocks (MAE): N' = N_visible, every row must hide
        the same number, and the visible patches keep their original order. With
        ``keep_masked`` the hidden patches' embeddings become ``mask_token`` before the
        positions are added (SimMIM, BEiT, data2vec): N' = N, any count per row.
        """
        tokens = self._embed(x, mask, keep_masked)
        for block in self.blocks:
            tokens, _ = self._run_block(block, tokens)
        return self.norm(tokens)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, D): the normalised CLS token, or the mean patch token."""
        tokens = self.forward_tokens(x)  # (B, 1 + N, D)
        if self.pool == "cls":
            return tokens[:, 0]
        return tokens[:, 1:].mean(dim=1)

    def forward_layers(self, x: Tensor, mask: Tensor | None = None) -> list[Tensor]:
        """(B, C, H, W) -> one (B, 1 + N, D) tensor per block, CLS first: data2vec's targets.

        Block l gives its feed-forward branch before the last residual connection,
        MLP(LN(x + a)), not its output x + a + f: data2vec (Baevski et al. 2022, its
        BEiT-based vision model's ``fc_feature``) takes this, un-normalised, and
        instance-normalises and averages the top K itself. ``mask`` swaps hidden patches
        for ``mask_token`` as ``forward_tokens(..., keep_masked=True)``.
        """
        tokens = self._embed(x, mask, keep_masked=True)
        layers = []
        for block in self.blocks:
            tokens, ffn = self._run_block(block, tokens)
            layers.append(ffn)
        return layers

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Encoders exported before the mask token existed lack it: keep the current one,
        # so old exports and checkpoints load, strict or not.
        state_dict.setdefault(prefix + "mask_token", self.mask_token.detach().clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def get_last_attention(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, heads, 1 + N, 1 + N) softmax weights of the last block.

        Row 0 of each head is where the CLS token looks: reshape ``[:, :, 0, 1:]`` to the
        patch grid to draw DINO attention maps.
        """
        tokens = self._embed(x, None)
        for block in self.blocks[:-1]:
            tokens = block(tokens)
        last = self.blocks[-1]
        assert isinstance(last, Block)
        return last.attn.attention_weights(last.norm1(tokens))


def _divisors_hint(size: int) -> str:
    """The divisors of ``size`` between 2 and 16 as a readable list."""
    divisors = [str(p) for p in range(2, 17) if size % p == 0]
    return ", ".join(divisors) if divisors else "1"
