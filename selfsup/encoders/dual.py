"""Two towers for image–text pairs (CLIP, SigLIP, ALIGN): an image encoder and a text
encoder of the registry, each followed by a linear projection into one shared space.

``forward(images)`` gives the image tower's pooled features (B, D_image), what a linear probe
or kNN reads, as CLIP's linear-probe evaluation reads the features before the projection;
``encode_image`` and ``encode_text`` give the projected embeddings (B, P) that the pair losses
compare and that zero-shot classification and retrieval rank. The projections belong to the
encoder, not to a method's head, because zero-shot use after export needs them.
"""

from __future__ import annotations

from torch import Tensor, nn


class DualEncoder(nn.Module):
    """``image`` and ``text`` towers (registered encoders), projected to ``proj_dim``."""

    def __init__(self, image: nn.Module, text: nn.Module, proj_dim: int) -> None:
        super().__init__()
        if proj_dim < 1:
            raise ValueError(f"proj_dim must be a positive integer, got {proj_dim}")
        self.image = image
        self.text = text
        self.embed_dim: int = int(image.embed_dim)
        self.proj_dim = proj_dim
        # no bias, as CLIP's projections: a bias would only shift every embedding alike
        self.image_proj = nn.Linear(image.embed_dim, proj_dim, bias=False)
        self.text_proj = nn.Linear(text.embed_dim, proj_dim, bias=False)
        for proj in (self.image_proj, self.text_proj):
            nn.init.normal_(proj.weight, std=proj.in_features**-0.5)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) normalised images -> (B, D_image) pooled image-tower features."""
        return self.image(images)  # type: ignore[no-any-return]

    def encode_image(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, P) projected image embeddings (not normalised)."""
        return self.image_proj(self.image(images))  # type: ignore[no-any-return]

    def encode_text(self, tokens: Tensor) -> Tensor:
        """(B, L) token ids -> (B, P) projected text embeddings (not normalised)."""
        return self.text_proj(self.text(tokens))  # type: ignore[no-any-return]
