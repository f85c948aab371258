"""SigLIP: CLIP's two towers trained with a pairwise sigmoid loss, each image–caption pair a
binary problem of its own, with a learned temperature and bias.

Zhai, Mustafa, Kolesnikov, Beyer. "Sigmoid Loss for Language Image Pre-Training." ICCV 2023.
arXiv:2303.15343.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.losses.siglip import SigLIPLoss
from selfsup.methods.pairs import embed_view, pair_step, pair_views, two_towers


@dataclass
class SigLIPConfig:
    """SigLIP's loss settings as the paper sets them."""

    init_log_temperature: float = math.log(10)
    """t' with temperature t = exp(t'); log 10 as in the paper."""
    init_bias: float = -10.0
    """b starts at -10 so that the many negatives start near their target and the first
    steps are not spent pushing them down; the paper's value."""


class SigLIP(nn.Module):
    def __init__(
        self, cfg: SigLIPConfig, encoder: nn.Module | dict[str, nn.Module], info: DataInfo
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = two_towers(encoder)
        self.channels_last = info.channels_last
        self.loss = SigLIPLoss(cfg.init_log_temperature, cfg.init_bias)

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return pair_step(self.encoder, self.loss, batch, self.channels_last)

    def make_views(self, batch: dict[str, Tensor]) -> list[Tensor]:
        return pair_views(batch, self.channels_last)

    def embed(self, x: Tensor) -> Tensor:
        return embed_view(self.encoder, x)

    def contrast(self, embeddings: list[Tensor]) -> Tensor:
        z_image, z_text = embeddings
        return self.loss(z_image, z_text)  # type: ignore[no-any-return]

    def on_step_end(self, progress: float) -> None:
        """SigLIP learns its temperature and bias; it has no schedule."""
