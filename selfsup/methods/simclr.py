"""SimCLR: two augmented views of each image, a projection head, and NT-Xent.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations." ICML 2020. arXiv:2002.05709.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.errors import SelfsupError
from selfsup.heads import mlp
from selfsup.losses import NTXentLoss
from selfsup.views import ImageAugment, ImageViews


@dataclass
class SimCLRConfig:
    """SimCLR's hyperparameters; defaults follow the paper's small-image (CIFAR) setting."""

    temperature: float = 0.2
    """τ of NT-Xent. The paper uses 0.1 at batch 4096 and 0.5 for CIFAR; 0.2 works well at
    batch 256. Lower it if kNN accuracy plateaus early; raise it if the loss is unstable."""
    proj_hidden_dim: int | None = None
    """Hidden width of the projection MLP; None uses the encoder's width (as the paper does)."""
    proj_dim: int = 128
    proj_layers: int = 2
    augment: ImageAugment = field(default_factory=ImageAugment)

    def validate(self) -> None:
        if not 1e-3 <= self.temperature < float("inf"):
            raise SelfsupError(
                f"method_args.temperature must be at least 0.001 (0.1-0.5 work), got {self.temperature}"
            )
        widths = {"proj_dim": self.proj_dim, "proj_layers": self.proj_layers}
        if self.proj_hidden_dim is not None:
            widths["proj_hidden_dim"] = self.proj_hidden_dim
        for name, value in widths.items():
            if value < 1:
                raise SelfsupError(f"method_args.{name} must be a positive integer, got {value}")


class SimCLR(nn.Module):
    def __init__(self, cfg: SimCLRConfig, encoder: nn.Module, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        dim = encoder.embed_dim
        self.projector = mlp(dim, cfg.proj_hidden_dim or dim, cfg.proj_dim, layers=cfg.proj_layers)
        self.views = ImageViews(info.channels, info.image_size, cfg.augment, 2, info.channels_last)
        self.loss = NTXentLoss(cfg.temperature)

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x1, x2 = self.make_views(batch)  # 2 × (B, C, S, S)
        h1, h2 = self.encoder(x1), self.encoder(x2)  # 2 × (B, D)
        loss = self.contrast([self.projector(h1), self.projector(h2)])
        return {"loss": loss, "features": h1.detach()}

    # The three parts below let the engine's gradient cache train batches far larger than
    # memory holds: views once, embeddings chunk by chunk, the loss over the whole batch.

    def make_views(self, batch: dict[str, Tensor]) -> list[Tensor]:
        return self.views(batch["image"])

    def embed(self, x: Tensor) -> Tensor:
        """One view's images (B, C, S, S) -> projections (B, proj_dim); per-sample (BatchNorm
        aside), so it can run in chunks."""
        return self.projector(self.encoder(x))

    def contrast(self, embeddings: list[Tensor]) -> Tensor:
        z1, z2 = embeddings
        return self.loss(z1, z2)

    def on_step_end(self, progress: float) -> None:
        """SimCLR has no schedule of its own."""
