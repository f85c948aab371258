"""The reconstruction loss of masked patches (PatchTST, Nie et al., ICLR 2023,
arXiv:2211.14730, section 3.2 "Representation learning", and its ``PatchMaskCB._loss``).

Mean squared error between the predicted and the true (instance-normalised) values of the
hidden patches: each patch's error is the mean over its values, and the loss the mean over the
hidden patches,

    L = sum_m h_m · mean_p (pred[m, p] - target[m, p])² / sum_m h_m,

with h_m = 1 for a hidden patch. Missing target values (NaN: gaps, or the padding past a
shorter series' end) are left out of their patch's mean, and a patch with none observed is
left out of the loss, so padding is never a target.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.errors import SelfsupError


class MaskedPatchLoss(nn.Module):
    """pred (B, M, P), target (B, M, P) with NaN where missing, hidden (B, M) bool -> scalar."""

    def forward(self, pred: Tensor, target: Tensor, hidden: Tensor) -> Tensor:
        if pred.shape != target.shape or hidden.shape != pred.shape[:2]:
            raise SelfsupError(
                f"pred and target must be (B, M, P) and hidden (B, M), got {tuple(pred.shape)}, "
                f"{tuple(target.shape)}, {tuple(hidden.shape)}"
            )
        observed = ~torch.isnan(target)  # (B, M, P)
        error = (pred.float() - torch.nan_to_num(target.float(), nan=0.0)).square()
        count = observed.sum(dim=-1)  # (B, M)
        per_patch = (error * observed).sum(dim=-1) / count.clamp(min=1)  # (B, M)
        counted = hidden & (count > 0)
        return (per_patch * counted).sum() / counted.sum().clamp(min=1)
