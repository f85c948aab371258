"""The dilated convolutional encoder of TS2Vec (Yue et al., AAAI 2022, arXiv:2106.10466).

A linear input projection per time step, then residual blocks of two dilated 1-D convolutions
(kernel 3, GELU before each), the dilation doubling per block (1, 2, 4, ...), so the receptive
field doubles too: 10 blocks see about 4,000 steps. Every time step keeps its own feature
vector (``forward_tokens``); the series' feature is their max over time (``forward``), which
is how TS2Vec pools a whole series for classification.

Missing values (NaN, and the NaN padding past a shorter series' end) are the encoder's to
handle, as in TS2Vec: the input is zeroed there and so is its projection, and the pooling
skips those steps. ``forward_tokens(x, mask)`` takes TS2Vec's timestamp mask (True = hidden),
which zeroes the projected steps it hides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import SelfsupError


class DilatedBlock(nn.Module):
    """x + conv(GELU(conv(GELU(x)))) with "same" padding; a 1×1 projection on the skip path
    where the width changes (and on the last block, as in TS2Vec)."""

    def __init__(self, in_dim: int, out_dim: int, dilation: int, project: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_dim, out_dim, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(out_dim, out_dim, 3, padding=dilation, dilation=dilation)
        self.skip = nn.Conv1d(in_dim, out_dim, 1) if project or in_dim != out_dim else None

    def forward(self, x: Tensor) -> Tensor:  # (B, D, T) -> (B, D', T)
        residual = x if self.skip is None else self.skip(x)
        return self.conv2(F.gelu(self.conv1(F.gelu(x)))) + residual


class DilatedConvEncoder(nn.Module):
    """Series (B, T, C) -> (B, D) pooled, or (B, T, D) per-step features.

    Args:
        in_channels: channels C of the series (1 for the univariate UCR sets).
        width: hidden width of the blocks; TS2Vec's 64.
        embed_dim: output width D; TS2Vec's 320.
        depth: hidden blocks (TS2Vec's 10), plus one output block; block i dilates by 2**i.
        dropout: dropout on the output features while training (TS2Vec's 0.1).
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 64,
        embed_dim: int = 320,
        depth: int = 10,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if min(in_channels, width, embed_dim) < 1 or depth < 0:
            raise SelfsupError(
                "the dilated encoder needs positive in_channels, width and embed_dim and depth >= 0"
            )
        self.embed_dim: int = embed_dim
        self.in_channels = in_channels
        self.input_fc = nn.Linear(in_channels, width)
        widths = [width] * depth + [embed_dim]
        self.blocks = nn.Sequential(
            *(
                DilatedBlock(widths[i - 1] if i else width, widths[i], 2**i, i == depth)
                for i in range(depth + 1)
            )
        )
        self.dropout = nn.Dropout(dropout)

    def forward_tokens(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, T, C) series, NaN where missing -> (B, T, D) features of every time step.

        ``mask`` (B, T) bool, True = hide the step (TS2Vec's timestamp masking): its projected
        input is zeroed, as is that of a step with any missing channel.
        """
        if x.ndim != 3 or x.shape[-1] != self.in_channels:
            raise SelfsupError(
                f"the dilated encoder reads series (B, T, {self.in_channels}), got {tuple(x.shape)}"
            )
        missing = torch.isnan(x).any(dim=-1)  # (B, T)
        hidden = missing if mask is None else missing | mask
        h = self.input_fc(torch.nan_to_num(x, nan=0.0))  # (B, T, W)
        h = h.masked_fill(hidden[..., None], 0.0)
        h = self.blocks(h.transpose(1, 2))  # (B, D, T)
        return self.dropout(h.transpose(1, 2))  # (B, T, D)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, D): the max over the observed time steps (a step is observed when
        any channel is; a series with none observed gives zeros)."""
        tokens = self.forward_tokens(x)  # (B, T, D)
        observed = ~torch.isnan(x).all(dim=-1)  # (B, T)
        pooled = tokens.masked_fill(~observed[..., None], float("-inf")).amax(dim=1)
        return torch.where(observed.any(dim=1, keepdim=True), pooled, torch.zeros_like(pooled))
