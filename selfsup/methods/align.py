"""ALIGN: CLIP's two towers trained with a normalised softmax whose temperature is learned
from 1.0, with label smoothing for noisy alt-text captions.

Jia, Yang, Xia, Chen, Parekh, Pham, Le, Sung, Li, Duerig. "Scaling Up Visual and
Vision-Language Representation Learning With Noisy Text Supervision." ICML 2021.
arXiv:2102.05918.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.losses.clip import ALIGNLoss
from selfsup.methods.pairs import PairContrast


@dataclass
class ALIGNConfig:
    """ALIGN's loss settings as the paper sets them."""

    init_temperature: float = 1.0
    """τ starts at 1.0 and is learned (the paper: learned temperatures beat hand-tuned ones)."""
    label_smoothing: float = 0.1
    """The paper's 0.1; it softens the targets for captions that do not describe the image."""

    def validate(self) -> None:
        if not self.init_temperature > 0:
            raise SelfsupError(
                f"method_args.init_temperature must be positive, got {self.init_temperature}"
            )
        if not 0 <= self.label_smoothing < 1:
            raise SelfsupError(
                f"method_args.label_smoothing must lie in [0, 1), got {self.label_smoothing}"
            )


class ALIGN(PairContrast):
    def __init__(
        self, cfg: ALIGNConfig, encoder: nn.Module | dict[str, nn.Module], info: DataInfo
    ) -> None:
        super().__init__(cfg, encoder, info, ALIGNLoss(cfg.init_temperature, cfg.label_smoothing))
