"""CLIP: an image tower and a text tower trained so that each image's embedding is nearest
its own caption's among the batch, by a symmetric InfoNCE with a learned logit scale.

Radford, Kim, Hallacy, Ramesh, Goh, Agarwal, Sastry, Askell, Mishkin, Clark, Krueger,
Sutskever. "Learning Transferable Visual Models From Natural Language Supervision." ICML 2021.
arXiv:2103.00020.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.losses.clip import LOGIT_SCALE_MAX, CLIPLoss
from selfsup.methods.pairs import embed_view, pair_step, pair_views, two_towers


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


class CLIP(nn.Module):
    def __init__(
        self, cfg: CLIPConfig, encoder: nn.Module | dict[str, nn.Module], info: DataInfo
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = two_towers(encoder)
        self.channels_last = info.channels_last
        self.loss = CLIPLoss(cfg.init_temperature, cfg.max_logit_scale)

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return pair_step(self.encoder, self.loss, batch, self.channels_last)

    # The gradient cache (engine/accumulate.py): the views are [images, tokens].

    def make_views(self, batch: dict[str, Tensor]) -> list[Tensor]:
        return pair_views(batch, self.channels_last)

    def embed(self, x: Tensor) -> Tensor:
        return embed_view(self.encoder, x)

    def contrast(self, embeddings: list[Tensor]) -> Tensor:
        z_image, z_text = embeddings
        return self.loss(z_image, z_text)  # type: ignore[no-any-return]

    def on_step_end(self, progress: float) -> None:
        """CLIP learns its temperature; it has no schedule."""
