"""SimMIM: replace a random 60% of the image's patches by a learned mask token, encode the
whole sequence, and regress the raw pixels of the hidden patches with a linear head (L1).

Xie et al. "SimMIM: A Simple Framework for Masked Image Modeling." CVPR 2022.
arXiv:2111.09886.

Masks are drawn over squares of ``mask_patch`` × ``mask_patch`` model patches (the paper's
32 px mask patches over 16 px ViT patches is ``mask_patch = 2``). The head is one linear
layer per token to its patch's pixels (the paper's 1×1 convolution + pixel shuffle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.losses.mae import unpatchify
from selfsup.losses.simmim import SimMIMLoss
from selfsup.views import ImageAugment, ImageViews
from selfsup.views.masking import simmim_mask


@dataclass
class SimMIMConfig:
    """SimMIM's hyperparameters (the paper's ViT-B settings)."""

    mask_ratio: float = 0.6
    """Share of mask squares hidden (the paper's 0.6; it reports 0.4-0.8 as similar)."""
    mask_patch: int = 2
    """Side of a mask square in model patches (32 px mask patches over 16 px ViT patches);
    the image's patch grid must be divisible by it (7×7 grids of 28 px / patch 4 need 1 or 7)."""
    augment: ImageAugment = field(
        default_factory=lambda: ImageAugment(
            paper_crop_scale=(0.67, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0
        )
    )
    """The paper's light augmentation: random resized crop (scale 0.67-1) and flip."""

    def validate(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise SelfsupError(f"mask_ratio must lie in (0, 1), got {self.mask_ratio}")


class SimMIM(nn.Module):
    def __init__(self, cfg: SimMIMConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        if not hasattr(encoder, "patch_size") or not hasattr(encoder, "forward_tokens"):
            raise SelfsupError("simmim needs a ViT encoder (e.g. --encoder vit-tiny)")
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        self.patch = encoder.patch_size
        self.grid = info.image_size // self.patch
        if self.grid % cfg.mask_patch:
            divisors = [str(d) for d in range(1, self.grid + 1) if self.grid % d == 0]
            raise SelfsupError(
                f"mask_patch {cfg.mask_patch} does not divide the {self.grid}×{self.grid} patch "
                f"grid: use one of {', '.join(divisors)}"
            )
        self.channels = info.channels
        self.head = nn.Linear(encoder.embed_dim, self.patch**2 * info.channels)
        self.views = ImageViews(info.channels, info.image_size, [cfg.augment], 1, False)
        self.loss = SimMIMLoss()

    def sample_mask(self, batch: int, device) -> Tensor:  # noqa: ANN001
        mask = simmim_mask(batch, self.grid, self.grid, self.cfg.mask_ratio, self.cfg.mask_patch)
        return mask.to(device)

    def reconstruct(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Predicted image (B, C, H, W) of prepared images x under mask (B, N), and the
        encoder's tokens (B, 1 + N, D)."""
        tokens = self.encoder.forward_tokens(x, mask, keep_masked=True)  # (B, 1 + N, D)
        patches = self.head(tokens[:, 1:])  # (B, N, patch²·C)
        return unpatchify(patches, self.patch, self.channels), tokens

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.views(batch["image"])  # (B, C, S, S)
        mask = self.sample_mask(x.shape[0], x.device)  # (B, N), True = hidden
        pred, tokens = self.reconstruct(x, mask)
        loss = self.loss(pred, x, mask, self.patch)
        return {"loss": loss, "features": tokens[:, 0].detach()}

    def on_step_end(self, progress: float) -> None:
        del progress
