"""CLIP: an image tower and a text tower trained so that each image's embedding is nearest
its own caption's among the batch, by a symmetric InfoNCE with a learned logit scale.

Radford, Kim, Hallacy, Ramesh, Goh, Agarwal, Sastry, Askell, Mishkin, Clark, Krueger,
Sutskever. "Learning Transferable Visual Models From Natural Language Supervision." ICML 2021.
arXiv:2103.00020.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.losses.clip import LOGIT_SCALE_MAX, CLIPLoss
from selfsup.methods.pairs import PairContrast


@dataclass
class CLIPConfig:
    """CLIP's loss settings as the paper sets them."""

    init_temperature: float = 0.07
    """The logit scale starts at 1/0.07 ≈ 14.3 and is learned; the paper's value works."""
    max_logit_scale: float = LOGIT_SCALE_MAX
    """The learned scale is clamped at 100, as in the paper, against instability."""

    def validate(self) -> None:
        if not (0 < self.init_temperature and 1 / self.init_temperature <= self.max_logit_scale):
            raise SelfsupError(
                "method_args.init_temperature must be positive with 1/init_temperature at most "
                f"max_logit_scale; got {self.init_temperature} and {self.max_logit_scale}"
            )


class CLIP(PairContrast):
    def __init__(
        self, cfg: CLIPConfig, encoder: nn.Module | dict[str, nn.Module], info: DataInfo
    ) -> None:
        super().__init__(cfg, encoder, info, CLIPLoss(cfg.init_temperature, cfg.max_logit_scale))
