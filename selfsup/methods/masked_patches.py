"""Masked patches: hide 40% of each channel's patches, reconstruct their values.

Nie et al. "A Time Series is Worth 64 Words: Long-term Forecasting with Transformers." ICLR
2023. arXiv:2211.14730 (PatchTST, section 3.2, self-supervised representation learning).

The mask-and-predict family for series. Each channel of a series is instance-normalised and
cut into non-overlapping patches by the encoder (``patch-tst``); in every channel a fixed
share of the patches is hidden (``patch_mask``: 40%, the paper's), their values replaced by
zeros before the embedding; the Transformer sees every patch (hidden ones as zeros, unlike
MAE, which drops them), and a linear head maps each hidden patch's token back to its
``patch_len`` normalised values, scored by the mean squared error (``MaskedPatchLoss``).
Channels never see each other: each is masked, encoded and reconstructed on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.losses.masked_patches import MaskedPatchLoss
from selfsup.views.series import patch_mask


@dataclass
class MaskedPatchesConfig:
    """PatchTST's self-supervised hyperparameters (``patchtst_pretrain.py``)."""

    mask_ratio: float = 0.4
    """Share of each channel's patches hidden; the paper's 0.4 (its ablation found 0.2-0.6
    alike)."""
    head_dropout: float = 0.2
    """Dropout on the tokens before the reconstruction head; the paper's 0.2."""

    def validate(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise SelfsupError(f"mask_ratio must lie in (0, 1), got {self.mask_ratio}")
        if not 0 <= self.head_dropout < 1:
            raise SelfsupError(f"head_dropout must lie in [0, 1), got {self.head_dropout}")


class MaskedPatches(nn.Module):
    def __init__(self, cfg: MaskedPatchesConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        del info  # the patches adapt to any series length
        if not hasattr(encoder, "patchify"):
            raise SelfsupError(
                "masked-patches needs an encoder that cuts series into patches: "
                "use --encoder patch-tst"
            )
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        self.head = nn.Sequential(
            nn.Dropout(cfg.head_dropout), nn.Linear(encoder.d_model, encoder.patch_len)
        )
        self.loss = MaskedPatchLoss()

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = batch["series"].float()  # (B, T, C), NaN where missing
        target, _ = self.encoder.patchify(x)  # (B, C·N, P) normalised, NaN where missing
        B, M, _ = target.shape
        # one mask per channel: rows of N patches, then back to the (B, C·N) token order
        channels = self.encoder.in_channels
        hidden = patch_mask(B * channels, M // channels, self.cfg.mask_ratio, x.device)
        hidden = hidden.reshape(B, M)
        tokens = self.encoder.forward_tokens(x, hidden)  # (B, C·N, D)
        loss = self.loss(self.head(tokens), target, hidden)
        pooled = tokens.detach().view(B, channels, M // channels, -1).mean(dim=2)  # (B, C, D)
        return {"loss": loss, "features": pooled.flatten(1)}  # (B, C·D), as the encoder pools

    def on_step_end(self, progress: float) -> None:
        del progress
