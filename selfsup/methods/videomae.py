"""VideoMAE: hide 90% of a clip's space-time cubes as tubes, reconstruct their pixels.

Tong et al. "VideoMAE: Masked Autoencoders are Data-Efficient Learners for Self-Supervised
Video Pre-Training." NeurIPS 2022. arXiv:2203.12602.

MAE for clips: the encoder (a space-time ViT, cubes of 2 frames) sees only the visible 10% of
the cubes; a light decoder gets them back in place with mask tokens elsewhere and fixed
sine-cosine positions over the N cube positions, and regresses each hidden cube's pixels,
normalised per cube (``MAELoss`` on ``cubify`` targets). The mask is a tube mask: the same
spatial positions hidden in every temporal slice, so a hidden cube cannot be copied from its
neighbour in time. No augmentation here: flips and crops would change what a clip's motion
is (its direction), and the moving-object clips need none.

One difference from the paper's loss: the per-cube target is normalised over all its values
with sqrt(var + 1e-6) (MAE's form, shared with ``mae``), where VideoMAE normalises each
channel of a cube with std + 1e-6; for grayscale clips only the epsilon's place differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.encoders.transformer import Block
from selfsup.errors import SelfsupError
from selfsup.losses.mae import MAELoss, cubify
from selfsup.views.video import TUBE_RATIO, tube_mask


@dataclass
class VideoMAEConfig:
    """VideoMAE's hyperparameters; the paper's defaults, the decoder scaled to tiny encoders."""

    mask_ratio: float = TUBE_RATIO
    """Share of tubes hidden: the paper's 90% (75% works too; images need less)."""
    decoder_dim: int = 96
    """Decoder width; the paper's 384 is for ViT-B, about half the encoder's width."""
    decoder_depth: int = 2
    """Decoder blocks; the paper's 4; 2 keeps a CPU run cheap."""
    decoder_heads: int = 3
    norm_pix_loss: bool = True
    """Normalise each target cube by its own mean and std (the paper's setting)."""

    def validate(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise SelfsupError(f"mask_ratio must lie in (0, 1), got {self.mask_ratio}")
        if self.decoder_dim % self.decoder_heads or self.decoder_dim % 2:
            raise SelfsupError(
                f"decoder_dim {self.decoder_dim} must be even and divisible by decoder_heads "
                f"{self.decoder_heads}"
            )


class VideoMAE(nn.Module):
    def __init__(self, cfg: VideoMAEConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        if not hasattr(encoder, "tubelet") or not hasattr(encoder, "forward_tokens"):
            raise SelfsupError("videomae needs a space-time ViT (e.g. --encoder video-vit-tiny)")
        cfg.validate()
        spatial = encoder.spatial_patches
        if math.floor(spatial * cfg.mask_ratio + 0.5) >= spatial:
            raise SelfsupError(
                f"mask_ratio {cfg.mask_ratio} hides all {spatial} positions of a frame: use a "
                "smaller patch_size (more positions) or a lower mask_ratio"
            )
        self.cfg = cfg
        self.encoder = encoder
        self.slices = encoder.num_patches // encoder.spatial_patches
        dim = cfg.decoder_dim
        self.decoder_embed = nn.Linear(encoder.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("decoder_pos", sincos_1d(encoder.num_patches, dim), persistent=False)
        self.decoder = nn.ModuleList(
            Block(dim, cfg.decoder_heads, 4.0) for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        cube = encoder.tubelet * encoder.patch_size**2 * info.channels
        self.decoder_pred = nn.Linear(dim, cube)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.loss = MAELoss(norm_pix=cfg.norm_pix_loss)

    def reconstruct(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Predicted cubes (B, N, cube) of float clips x (B, T, C, H, W) under ``mask`` (B, N),
        and the encoder's tokens of the visible cubes (B, N_visible, D)."""
        B, N = mask.shape
        latent = self.encoder.forward_tokens(x, mask)  # (B, N_visible, D)
        y = self.decoder_embed(latent)  # (B, N_visible, Dd)
        full = self.mask_token.to(y.dtype).expand(B, N, -1).clone()  # (B, N, Dd)
        full[~mask] = y.reshape(-1, y.shape[-1])  # visible cubes back in place, in order
        seq = full + self.decoder_pos
        for block in self.decoder:
            seq = block(seq)
        return self.decoder_pred(self.decoder_norm(seq)), latent

    def sample_mask(self, batch: int, device: torch.device) -> Tensor:
        return tube_mask(
            batch, self.slices, self.encoder.spatial_patches, self.cfg.mask_ratio, device=device
        )

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = to_clip_input(batch["video"])  # (B, T, C, H, W)
        mask = self.sample_mask(x.shape[0], x.device)  # (B, N), True = hidden
        pred, latent = self.reconstruct(x, mask)
        target = cubify(x, self.encoder.tubelet, self.encoder.patch_size)  # (B, N, cube)
        loss = self.loss(pred, target, mask)
        return {"loss": loss, "features": latent.mean(dim=1).detach()}

    def on_step_end(self, progress: float) -> None:
        del progress


MEAN, STD = 0.5, 0.5
"""Clips are scaled to [0, 1] and then to [-1, 1]."""


def to_clip_input(clips: Tensor) -> Tensor:
    """uint8 clips -> float in [-1, 1]; float clips pass unchanged."""
    if clips.is_floating_point():
        return clips
    return (clips.float() / 255 - MEAN) / STD


def sincos_1d(positions: int, dim: int) -> Tensor:
    """Fixed sine-cosine embeddings (1, positions, dim) of positions 0..positions-1: sin in the
    first half of the channels, cos in the second, at frequencies 1/10000^(2i/dim) (VideoMAE's
    decoder table, whose channels interleave sin and cos)."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)  # (D/2,)
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * omega[None]  # (N, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float().unsqueeze(0)
