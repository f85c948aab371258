"""MAE: hide 75% of the patches, encode only the visible ones, and reconstruct the hidden
pixels with a light decoder.

He et al. "Masked Autoencoders Are Scalable Vision Learners." CVPR 2022. arXiv:2111.06377.

The encoder (a ViT) never sees a mask token: hidden patches are dropped before its blocks,
so it pays for 25% of the tokens. The decoder gets the encoded visible tokens back in place,
mask tokens elsewhere, fixed 2-D sine-cosine positions, and predicts each patch's pixels;
the loss is the per-patch-normalised MSE on hidden patches only (``norm_pix_loss``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.encoders.vit import Block
from selfsup.errors import SelfsupError
from selfsup.losses.mae import MAELoss
from selfsup.views import ImageAugment, ImageViews
from selfsup.views.masking import random_patch_mask


@dataclass
class MAEConfig:
    """MAE's hyperparameters; the paper's defaults, with the decoder scaled to small ViTs."""

    mask_ratio: float = 0.75
    """Share of patches hidden (the paper's 75%; 0.6-0.9 all work)."""
    decoder_dim: int = 128
    """Decoder width; the paper's 512 is for ViT-B/L; about 2/3 of a tiny encoder's width."""
    decoder_depth: int = 2
    """Decoder blocks; the paper uses 8, and its Table 1a shows fine-tuning barely changes
    with 1 while linear probes prefer deeper decoders; 2 keeps a CPU run cheap."""
    decoder_heads: int = 4
    norm_pix_loss: bool = True
    """Normalise each target patch by its own mean and std (the paper's better setting)."""
    augment: ImageAugment = field(
        default_factory=lambda: ImageAugment(
            paper_crop_scale=(0.2, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0
        )
    )
    """The paper's only augmentation: random resized crop (scale 0.2-1) and flip."""

    def validate(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise SelfsupError(f"mask_ratio must lie in (0, 1), got {self.mask_ratio}")
        if self.decoder_dim % self.decoder_heads:
            raise SelfsupError(
                f"decoder_dim {self.decoder_dim} is not divisible by decoder_heads "
                f"{self.decoder_heads}"
            )
        if self.decoder_dim % 4:
            raise SelfsupError(
                f"decoder_dim must be a multiple of 4 for 2-D sin-cos positions, got {self.decoder_dim}"
            )


class MAE(nn.Module):
    def __init__(self, cfg: MAEConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        if not hasattr(encoder, "patch_size") or not hasattr(encoder, "forward_tokens"):
            raise SelfsupError("mae needs a ViT encoder (e.g. --encoder vit-tiny)")
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        self.patch = encoder.patch_size
        self.grid = info.image_size // self.patch
        self.channels = info.channels
        dim = cfg.decoder_dim
        self.decoder_embed = nn.Linear(encoder.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("decoder_pos", sincos_2d(self.grid, dim), persistent=False)
        self.decoder = nn.ModuleList(
            Block(dim, cfg.decoder_heads, 4.0) for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dim, self.patch**2 * info.channels)
        nn.init.normal_(self.mask_token, std=0.02)
        self.views = ImageViews(info.channels, info.image_size, [cfg.augment], 1, False)
        self.loss = MAELoss(norm_pix=cfg.norm_pix_loss)

    def reconstruct(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Predicted patches (B, N, patch²·C) of prepared images x (B, C, H, W) under mask
        (B, N), and the encoder's tokens of the visible patches (B, 1 + N_visible, D)."""
        B, N = mask.shape
        latent = self.encoder.forward_tokens(x, mask)  # (B, 1 + N_visible, D), hidden dropped
        y = self.decoder_embed(latent)  # (B, 1 + N_visible, Dd)
        full = self.mask_token.to(y.dtype).expand(B, N, -1).clone()  # (B, N, Dd)
        full[~mask] = y[:, 1:].reshape(-1, y.shape[-1])  # visible tokens back in place, in order
        seq = torch.cat([y[:, :1], full], dim=1) + self.decoder_pos  # (B, 1 + N, Dd)
        for block in self.decoder:
            seq = block(seq)
        return self.decoder_pred(self.decoder_norm(seq))[:, 1:], latent  # (B, N, patch²·C)

    def sample_mask(self, batch: int, device: torch.device) -> Tensor:
        return random_patch_mask(batch, self.grid**2, self.cfg.mask_ratio, device=device)

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.views(batch["image"])  # (B, C, S, S)
        mask = self.sample_mask(x.shape[0], x.device)  # (B, N), True = hidden
        pred, latent = self.reconstruct(x, mask)
        loss = self.loss(pred, x, mask, self.patch)
        return {"loss": loss, "features": latent[:, 0].detach()}  # CLS of the visible patches

    def on_step_end(self, progress: float) -> None:
        del progress


def sincos_2d(grid: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position embeddings (1, 1 + grid², dim), a zero row for CLS first:
    half the channels encode the row, half the column, each as sin/cos at geometric
    frequencies 1/10000^(2i/(dim/2)) (MAE's decoder positions)."""
    if dim % 4:
        raise ValueError(
            f"decoder_dim must be a multiple of 4 for 2-D sin-cos positions, got {dim}"
        )
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (D/4,)
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64),
        torch.arange(grid, dtype=torch.float64),
        indexing="ij",
    )
    parts = []
    for coordinate in (rows.flatten(), cols.flatten()):
        angles = coordinate[:, None] * omega[None]  # (N, D/4)
        parts += [angles.sin(), angles.cos()]
    table = torch.cat(parts, dim=1).float()  # (N, D)
    return torch.cat([torch.zeros(1, dim), table]).unsqueeze(0)  # (1, 1 + N, D)
