"""What the image–text methods (CLIP, SigLIP, ALIGN) share: two towers, the batch's two
inputs, and one step. They differ only in their loss, so each method file is its config,
its loss and these calls.

The only augmentation is none: CLIP trained with "a random square crop from resized images
[as] the only data augmentation", and colour jitter would contradict captions that name
colours; at the small sizes selfsup trains on a CPU the images are used as they are.
"""

from __future__ import annotations

from torch import Tensor, nn

from selfsup.data.info import DataInfo
from selfsup.encoders.dual import DualEncoder
from selfsup.errors import SelfsupError
from selfsup.views import prepare

PROJ_DIM = 128
"""Width of the shared space when the method is handed a dict of two plain towers."""


def two_towers(encoder: nn.Module | dict[str, nn.Module]) -> nn.Module:
    """A two-tower encoder (``encode_image``, ``encode_text``): as given, or made from a dict
    ``{"image": tower, "tokens": tower}`` with fresh linear projections."""
    if isinstance(encoder, dict):
        if set(encoder) != {"image", "tokens"}:
            raise SelfsupError(
                f"a pair method takes encoders for 'image' and 'tokens', got {sorted(encoder)}"
            )
        return DualEncoder(encoder["image"], encoder["tokens"], PROJ_DIM)
    if not all(callable(getattr(encoder, f, None)) for f in ("encode_image", "encode_text")):
        raise SelfsupError(
            f"a pair method needs a two-tower encoder (encode_image, encode_text), got a "
            f"{type(encoder).__name__}: pass --encoder clip-tiny"
        )
    return encoder


def pair_views(batch: dict[str, Tensor], channels_last: bool) -> list[Tensor]:
    """[images (B, 3, S, S) normalised floats, tokens (B, L)]."""
    return [prepare(batch["image"], channels_last=channels_last), batch["tokens"]]


def embed_view(encoder: nn.Module, x: Tensor) -> Tensor:
    """Token ids go through the text tower, images through the image tower: (b, P)."""
    if x.is_floating_point():
        return encoder.encode_image(x)  # type: ignore[no-any-return]
    return encoder.encode_text(x)  # type: ignore[no-any-return]


def pair_step(
    encoder: nn.Module, loss: nn.Module, batch: dict[str, Tensor], channels_last: bool
) -> dict[str, Tensor]:
    """One step: both towers, the loss, the image features for the collapse monitor and the
    loss's current scale (its learnable temperature's inverse) as a metric."""
    images, tokens = pair_views(batch, channels_last)
    features = encoder(images)  # (B, D): the image tower, as probes read it
    z_image = encoder.image_proj(features)  # (B, P)
    z_text = encoder.encode_text(tokens)  # (B, P)
    return {
        "loss": loss(z_image, z_text),
        "features": features.detach(),
        "embedding": z_image.detach(),
        "logit_scale": loss.scale().detach(),
    }


class PairContrast(nn.Module):
    """The method of two towers and a contrastive loss over the batch's pairs; CLIP, SigLIP and
    ALIGN are this with their own loss (a module with its learnable temperature, bias)."""

    def __init__(
        self,
        cfg: object,
        encoder: nn.Module | dict[str, nn.Module],
        info: DataInfo,
        loss: nn.Module,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = two_towers(encoder)
        self.channels_last = info.channels_last
        self.loss = loss

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
        """The loss learns its temperature (and bias); there is no schedule."""
