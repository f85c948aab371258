"""The wav2vec 2.0 encoder: a convolutional feature encoder over the raw waveform, then a
Transformer with convolutional relative positions. Shared by wav2vec 2.0, HuBERT and
data2vec-audio, as in their papers.

Baevski, Zhou, Mohamed, Auli. "wav2vec 2.0: A Framework for Self-Supervised Learning of
Speech Representations." NeurIPS 2020. arXiv:2006.11477.

Layout (the paper's, scaled for a CPU by the registry's defaults):

    waveform (B, T), NaN after each utterance's end (``selfsup.data.audio``)
      -> zero padding, normalise each utterance to zero mean and unit variance
      -> conv feature encoder: blocks of Conv1d (no bias) + GELU, GroupNorm after the first
         (fairseq's "default" mode; here over the real samples only); the paper's 7 blocks of 512 channels, kernels
         (10,3,3,3,3,2,2), strides (5,2,2,2,2,2,2) = 20 ms frames at 16 kHz
      -> z (B, N, C)      latent frames: what is quantized and what masking acts on
      -> LayerNorm(C), Linear(C, D)
      -> [mask embedding at hidden frames]
      -> x + GELU(Conv1d(x, kernel K, groups G))   relative positions (paper: K 128, G 16)
      -> pre-LN Transformer blocks (``selfsup.encoders.transformer.Block``), final LayerNorm
      -> c (B, N, D)      context vectors

Padding frames (those whose receptive field starts past the end of the utterance) are never
attended to and are left out of the mean-pooled ``forward``. The positional convolution
here is a plain grouped convolution; the paper adds weight normalisation to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.data.audio import split_padding
from selfsup.encoders.transformer import Block
from selfsup.errors import SelfsupError


class FeatureEncoder(nn.Module):
    """Raw waveform (B, T) -> latent frames (B, C, N): the wav2vec 2.0 conv stack."""

    def __init__(self, dim: int, kernels: Sequence[int], strides: Sequence[int]) -> None:
        super().__init__()
        if len(kernels) != len(strides) or not kernels:
            raise SelfsupError(
                f"conv_kernels and conv_strides must be non-empty lists of one length, got "
                f"{list(kernels)} and {list(strides)}"
            )
        self.kernels, self.strides = list(kernels), list(strides)
        self.convs = nn.ModuleList(
            nn.Conv1d(1 if i == 0 else dim, dim, k, stride=s, bias=False)
            for i, (k, s) in enumerate(zip(kernels, strides, strict=True))
        )
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight)
        self.norm = nn.GroupNorm(dim, dim)  # after the first conv: per channel over time

    def receptive_field(self) -> int:
        field, jump = 1, 1
        for k, s in zip(self.kernels, self.strides, strict=True):
            field += (k - 1) * jump
            jump *= s
        return field

    def output_lengths(self, lengths: Tensor, layers: int | None = None) -> Tensor:
        """Frames of each input length (B,) -> (B,): floor((L − k) / s) + 1 per layer (the
        first ``layers`` of them; all by default)."""
        pairs = list(zip(self.kernels, self.strides, strict=True))[:layers]
        for k, s in pairs:
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        return lengths

    def forward(self, wave: Tensor, lengths: Tensor) -> Tensor:
        """(B, T) waveforms, (B,) real lengths -> (B, C, N). The first block's GroupNorm
        takes its statistics over each utterance's own outputs only, so padding changes
        nothing in the real frames (whose receptive fields end inside the utterance)."""
        h = self.convs[0](wave.unsqueeze(1))  # (B, C, N1)
        first = self.output_lengths(lengths, layers=1)  # (B,)
        real = (torch.arange(h.shape[-1], device=h.device)[None] < first[:, None]).unsqueeze(1)
        count = real.sum(dim=-1, keepdim=True).clamp(min=1)  # (B, 1, 1)
        mean = (h * real).sum(dim=-1, keepdim=True) / count  # (B, C, 1)
        var = ((h - mean) ** 2 * real).sum(dim=-1, keepdim=True) / count
        h = (h - mean) / (var + self.norm.eps).sqrt()
        h = F.gelu(h * self.norm.weight[:, None] + self.norm.bias[:, None])
        for conv in self.convs[1:]:
            h = F.gelu(conv(h))
        return h


class Wav2Vec2Encoder(nn.Module):
    """See the module docstring. ``forward(wave) -> (B, D)``, the mean of the context vectors
    over the utterance's frames; ``forward_tokens(wave, mask) -> (B, N, D)``;
    ``forward_layers(wave, mask)`` -> each block's feed-forward branch (data2vec targets)."""

    def __init__(
        self,
        *,
        sample_rate: int,
        conv_dim: int = 512,
        conv_kernels: Sequence[int] = (10, 3, 3, 3, 3, 2, 2),
        conv_strides: Sequence[int] = (5, 2, 2, 2, 2, 2, 2),
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        pos_kernel: int = 128,
        pos_groups: int = 16,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads or embed_dim % pos_groups:
            raise SelfsupError(
                f"embed_dim {embed_dim} must be divisible by num_heads {num_heads} and "
                f"pos_groups {pos_groups}"
            )
        self.sample_rate = sample_rate
        self.embed_dim = embed_dim
        self.conv_dim = conv_dim
        self.feature_encoder = FeatureEncoder(conv_dim, conv_kernels, conv_strides)
        self.feature_norm = nn.LayerNorm(conv_dim)
        self.project = nn.Linear(conv_dim, embed_dim)
        self.mask_embedding = nn.Parameter(torch.empty(embed_dim).uniform_())
        self.pos_conv = nn.Conv1d(
            embed_dim, embed_dim, pos_kernel, padding=pos_kernel // 2, groups=pos_groups
        )
        nn.init.normal_(self.pos_conv.weight, std=(4.0 / (pos_kernel * embed_dim)) ** 0.5)
        nn.init.zeros_(self.pos_conv.bias)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    @property
    def hop(self) -> int:
        """Waveform samples per frame (the product of the strides)."""
        return math.prod(self.feature_encoder.strides)

    def extract(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) waveforms with a NaN tail -> latent frames z (B, N, C) and their padding
        (B, N) bool; frame 0 always counts as real, so no row is empty."""
        if wave.dim() != 2:
            raise SelfsupError(
                f"audio must be a (B, T) batch of waveforms, got {tuple(wave.shape)}"
            )
        if wave.shape[1] < self.feature_encoder.receptive_field():
            raise SelfsupError(
                f"audio of {wave.shape[1]} samples is shorter than one frame "
                f"({self.feature_encoder.receptive_field()}): raise data.max_seconds"
            )
        wave, padding = split_padding(wave.float())
        real = (~padding).float()
        count = real.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
        mean = wave.sum(dim=1, keepdim=True) / count
        var = ((wave - mean) ** 2 * real).sum(dim=1, keepdim=True) / count
        wave = (wave - mean) / (var + 1e-5).sqrt() * real  # (B, T), zeros past the end
        samples = (~padding).sum(dim=1)  # (B,)
        z = self.feature_encoder(wave, samples).transpose(1, 2)  # (B, N, C)
        lengths = self.feature_encoder.output_lengths(samples)  # (B,)
        frame_padding = torch.arange(z.shape[1], device=z.device)[None] >= lengths[:, None]
        frame_padding[:, 0] = False
        return z, frame_padding

    def embed(self, z: Tensor) -> Tensor:
        """Latent frames (B, N, C) -> (B, N, D) inputs of the Transformer."""
        return self.project(self.feature_norm(z))

    def contextualise(
        self, x: Tensor, padding: Tensor, *, layers: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """(B, N, D) frame embeddings -> context vectors (B, N, D) and, with ``layers``, each
        block's feed-forward branch (B, N, D)."""
        x = x.masked_fill(padding.unsqueeze(-1), 0.0)
        pos = self.pos_conv(x.transpose(1, 2))  # (B, D, N + 1) for an even kernel
        x = x + F.gelu(pos[:, :, : x.shape[1]]).transpose(1, 2)
        attn_mask = ~padding[:, None, None, :]  # (B, 1, 1, N), True = may attend
        outputs = []
        for block in self.blocks:
            assert isinstance(block, Block)
            x, ffn = block.forward_with_ffn(x, attn_mask)
            if layers:
                outputs.append(ffn)
        return self.norm(x), outputs

    def _masked_input(self, wave: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        z, padding = self.extract(wave)
        x = self.embed(z)  # (B, N, D)
        if mask is not None:
            if mask.shape != padding.shape:
                raise SelfsupError(
                    f"mask must be (B, N) = {tuple(padding.shape)} frames, got {tuple(mask.shape)}"
                )
            x = torch.where(mask.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)
        return x, padding

    def forward_tokens(self, wave: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, T) waveforms -> (B, N, D) context vectors; ``mask`` (B, N) True = hidden frame
        (its input becomes the learned mask embedding)."""
        x, padding = self._masked_input(wave, mask)
        return self.contextualise(x, padding)[0]

    def forward_frames(self, wave: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, T) waveforms -> context vectors (B, N, D) and their padding (B, N) bool: what a
        frame-level head (CTC) reads."""
        x, padding = self._masked_input(wave, mask)
        return self.contextualise(x, padding)[0], padding

    def forward_layers(self, wave: Tensor, mask: Tensor | None = None) -> list[Tensor]:
        """(B, T) waveforms -> one (B, N, D) tensor per block: its feed-forward branch before
        the last residual connection (data2vec's targets)."""
        x, padding = self._masked_input(wave, mask)
        return self.contextualise(x, padding, layers=True)[1]

    def forward(self, wave: Tensor) -> Tensor:
        """(B, T) -> (B, D): the mean of the context vectors over the utterance's frames."""
        x, padding = self._masked_input(wave, None)
        states = self.contextualise(x, padding)[0]
        return pool_frames(states, padding)


def pool_frames(states: Tensor, padding: Tensor) -> Tensor:
    """(B, N, D) with (B, N) padding -> (B, D) mean over the real frames."""
    keep = (~padding).unsqueeze(-1).to(states.dtype)  # (B, N, 1)
    return (states * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
