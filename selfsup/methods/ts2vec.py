"""TS2Vec: contrast each time step's features across two overlapping crops, at every scale.

Yue et al. "TS2Vec: Towards Universal Representation of Time Series." AAAI 2022.
arXiv:2106.10466.

Two random crops of each series share a segment (``overlapping_crops``); each crop is
encoded with half of its projected time steps hidden (``timestamp_mask``); the features of
the shared steps, seen in two contexts, must agree instance-wise (against the other series)
and temporally (against the other steps), at every level of a max-pooling pyramid
(``HierarchicalContrastiveLoss``). No augmentation of the values: the crops and masks are the
views. The paper trains 200 iterations at batch 8 with AdamW at lr 1e-3 on a UCR set, and
classifies with an RBF SVM on the max-pooled series feature.

Left out: the paper evaluates an equal-weight average of every iterate's weights
(``torch.optim.swa_utils.AveragedModel``); selfsup exports the last weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.losses.ts2vec import HierarchicalContrastiveLoss
from selfsup.views.series import overlapping_crops, timestamp_mask


@dataclass
class TS2VecConfig:
    """TS2Vec's hyperparameters, the paper's defaults."""

    alpha: float = 0.5
    """Weight of the instance-wise term; the temporal term gets 1 - alpha."""
    temporal_unit: int = 0
    """First pyramid level with a temporal term; raise it (1-3) for series of many thousand
    steps to save time and memory."""
    mask_p: float = 0.5
    """Share of projected time steps hidden in each view (the paper's binomial mask)."""
    max_train_length: int = 3000
    """Longer series are trained on a random window of this many steps (the paper's 3000)."""

    def validate(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise SelfsupError(f"alpha must lie in [0, 1], got {self.alpha}")
        if self.temporal_unit < 0:
            raise SelfsupError(f"temporal_unit must be 0 or more, got {self.temporal_unit}")
        if not 0 <= self.mask_p < 1:
            raise SelfsupError(f"mask_p must lie in [0, 1), got {self.mask_p}")
        if self.max_train_length < 2 ** (self.temporal_unit + 1):
            raise SelfsupError(
                f"max_train_length {self.max_train_length} is shorter than the shortest crop "
                f"({2 ** (self.temporal_unit + 1)} steps)"
            )


class TS2Vec(nn.Module):
    def __init__(self, cfg: TS2VecConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        del info  # the crops and masks adapt to any series length
        if not hasattr(encoder, "forward_tokens"):
            raise SelfsupError("ts2vec needs per-step features: use --encoder ts2vec-dilated")
        cfg.validate()
        self.cfg = cfg
        self.encoder = encoder
        self.loss = HierarchicalContrastiveLoss(cfg.alpha, cfg.temporal_unit)

    def _window(self, x: Tensor) -> Tensor:
        """A random window of ``max_train_length`` steps of a longer batch (B, T, C)."""
        T, limit = x.shape[1], self.cfg.max_train_length
        if T <= limit:
            return x
        start = int(torch.randint(0, T - limit + 1, ()))
        return x[:, start : start + limit]

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = self._window(batch["series"].float())  # (B, T, C), NaN where missing
        crops = overlapping_crops(x, self.cfg.temporal_unit)
        B, shared = x.shape[0], crops.overlap
        mask1 = timestamp_mask(B, crops.first.shape[1], self.cfg.mask_p, x.device)
        mask2 = timestamp_mask(B, crops.second.shape[1], self.cfg.mask_p, x.device)
        z1 = self.encoder.forward_tokens(crops.first, mask1)[:, -shared:]  # (B, shared, D)
        z2 = self.encoder.forward_tokens(crops.second, mask2)[:, :shared]  # (B, shared, D)
        loss = self.loss(z1, z2)
        return {"loss": loss, "features": z1.detach().amax(dim=1)}  # (B, D) pooled

    def on_step_end(self, progress: float) -> None:
        del progress
