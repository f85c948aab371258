"""PatchTST's channel-independent patch Transformer for series (Nie et al., ICLR 2023,
arXiv:2211.14730).

Each channel of a series (B, T, C) is a univariate series of its own: normalised by its own
mean and standard deviation over the observed steps (RevIN's instance normalisation, without
the learned affine), cut into patches of ``patch_len`` steps every ``stride`` steps, and every
patch is one token: a linear embedding plus a position, then pre-LN Transformer blocks shared
by all channels. The tokens of channel c are ``c·N .. c·N + N - 1`` of ``forward_tokens``
(B, C·N, D); the pooled feature is each channel's mean over its observed patches,
concatenated: (B, C·D).

Differences from the paper's code, and why: the positions are fixed sine-cosine (PatchTST's
default is learned) so one encoder reads series of any length; the blocks use LayerNorm (the
paper's BatchNorm averages over the NaN padding of variable-length sets); a series whose length
is not a whole number of strides is padded at its end with missing values (the paper drops
the first steps), so nothing is lost. A patch with no observed value (padding past a shorter
series' end) is left out of the attention and of the pooling; missing values inside a patch
count as 0 after the normalisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.encoders.transformer import Block, check_mask
from selfsup.errors import SelfsupError


def sincos_positions(count: int, dim: int, device: torch.device | None = None) -> Tensor:
    """(count, dim) fixed positions: sin on the even and cos on the odd features, the
    frequencies 10000^(-2i/dim) of "Attention is all you need"."""
    position = torch.arange(count, device=device, dtype=torch.float32)[:, None]  # (N, 1)
    frequency = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )  # (dim / 2,)
    table = torch.zeros(count, dim, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


class PatchTransformer(nn.Module):
    """Series (B, T, C), NaN where missing -> (B, C·D) pooled, or (B, C·N, D) patch tokens.

    Args:
        in_channels: channels C; each is encoded on its own with the same weights.
        patch_len: steps per patch; the paper's 12 (self-supervised) or 16 (supervised).
        stride: steps between patch starts; equal to ``patch_len`` for masked pretraining
            (the paper's choice: overlapping patches would show a hidden patch's values).
        d_model: token width D; the paper's 128.
        depth: Transformer blocks; the paper's 3.
        num_heads: attention heads; the paper's 16.
        mlp_ratio: MLP width over D; the paper's 4 (d_ff 512).
        dropout: on attention and residual branches while training; the paper's 0.2.
        instance_norm: normalise each channel of each series by its own mean and std
            (RevIN, the paper's); False keeps level and scale in the input, which
            classification may need (a standing and a running accelerometer differ mostly
            in scale).
    """

    def __init__(
        self,
        in_channels: int = 1,
        patch_len: int = 12,
        stride: int = 12,
        d_model: int = 128,
        depth: int = 3,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        dropout: float = 0.2,
        instance_norm: bool = True,
    ) -> None:
        super().__init__()
        if min(in_channels, patch_len, stride, d_model, num_heads) < 1 or depth < 0:
            raise SelfsupError(
                "the patch transformer needs positive in_channels, patch_len, stride, d_model "
                "and num_heads"
            )
        if d_model % num_heads or d_model % 2:
            raise SelfsupError(f"d_model {d_model} must be even and divisible by {num_heads} heads")
        self.in_channels, self.patch_len, self.stride = in_channels, patch_len, stride
        self.d_model = d_model
        self.instance_norm = instance_norm
        self.embed_dim: int = in_channels * d_model
        self.embed = nn.Linear(patch_len, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(d_model, eps=1e-6)

    def num_patches(self, steps: int) -> int:
        """Patches N of a series of ``steps`` steps (its end padded to a whole stride)."""
        return max(0, math.ceil((steps - self.patch_len) / self.stride)) + 1

    def patchify(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, C) -> the normalised patches (B, C·N, patch_len), NaN where missing, and
        which patches hold any observed value (B, C·N) bool."""
        if x.ndim != 3 or x.shape[-1] != self.in_channels:
            raise SelfsupError(
                f"the patch transformer reads series (B, T, {self.in_channels}), got {tuple(x.shape)}"
            )
        B, T, C = x.shape
        x = x.float().transpose(1, 2)  # (B, C, T): each channel a series of its own
        if self.instance_norm:
            observed = ~torch.isnan(x)
            count = observed.sum(dim=-1, keepdim=True).clamp(min=1)  # (B, C, 1)
            mean = torch.where(observed, x, 0.0).sum(dim=-1, keepdim=True) / count
            var = torch.where(observed, (x - mean) ** 2, 0.0).sum(dim=-1, keepdim=True) / count
            x = (x - mean) / torch.sqrt(var + 1e-5)  # RevIN without the affine; NaN stays NaN
        N = self.num_patches(T)
        x = F.pad(x, (0, (N - 1) * self.stride + self.patch_len - T), value=math.nan)
        starts = torch.arange(N, device=x.device)[:, None] * self.stride  # (N, 1)
        patches = x[..., starts + torch.arange(self.patch_len, device=x.device)]  # (B, C, N, P)
        patches = patches.reshape(B, C * N, self.patch_len)
        return patches, ~torch.isnan(patches).all(dim=-1)

    def forward_tokens(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, T, C) -> (B, C·N, D). ``mask`` (B, C·N) bool, True = the patch is hidden: its
        values are replaced by zeros before the embedding (the paper's masking)."""
        patches, observed = self.patchify(x)
        B, M, _ = patches.shape
        patches = torch.nan_to_num(patches, nan=0.0)
        if mask is not None:
            patches = patches.masked_fill(check_mask(mask, B, M)[..., None], 0.0)
        C = self.in_channels
        N = M // C
        h = self.embed(patches) + sincos_positions(N, self.d_model, x.device).repeat(C, 1)
        h = self.dropout(h).reshape(B * C, N, self.d_model)  # each channel on its own
        # a patch of padding is no key (a row of padding still attends to itself)
        index = torch.arange(N, device=x.device)
        keys = observed.reshape(B * C, 1, N) | (index[:, None] == index[None, :])  # (B·C, N, N)
        for block in self.blocks:
            h = block(h, keys[:, None])  # (B·C, N, D)
        return self.norm(h).reshape(B, M, self.d_model)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, C·D): each channel's mean over its observed patches, concatenated."""
        tokens = self.forward_tokens(x)  # (B, C·N, D)
        _, observed = self.patchify(x)
        B, M, D = tokens.shape
        weights = observed.to(tokens.dtype).view(B, self.in_channels, -1, 1)  # (B, C, N, 1)
        summed = (tokens.view(B, self.in_channels, -1, D) * weights).sum(dim=2)
        pooled = summed / weights.sum(dim=2).clamp(min=1)  # (B, C, D)
        return pooled.flatten(1)
