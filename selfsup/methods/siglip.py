"""SigLIP: CLIP's two towers trained with a pairwise sigmoid loss, each image–caption pair a
binary problem of its own, with a learned temperature and bias.

Zhai, Mustafa, Kolesnikov, Beyer. "Sigmoid Loss for Language Image Pre-Training." ICCV 2023.
arXiv:2303.15343.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from selfsup.data.info import DataInfo
from selfsup.losses.siglip import SigLIPLoss
from selfsup.methods.pairs import PairContrast


@dataclass
class SigLIPConfig:
    """SigLIP's loss settings as the paper sets them."""

    init_log_temperature: float = math.log(10)
    """t' with temperature t = exp(t'); log 10 as in the paper."""
    init_bias: float = -10.0
    """b starts at -10 so that the many negatives start near their target and the first
    steps are not spent pushing them down; the paper's value."""


class SigLIP(PairContrast):
    def __init__(
        self, cfg: SigLIPConfig, encoder: nn.Module | dict[str, nn.Module], info: DataInfo
    ) -> None:
        super().__init__(cfg, encoder, info, SigLIPLoss(cfg.init_log_temperature, cfg.init_bias))
