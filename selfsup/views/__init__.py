"""View generators: ``nn.Module``s that turn a batch into the pretext task's inputs, on device."""

from selfsup.views.image import ImageAugment, ImageViews, normalize, prepare, to_float
from selfsup.views.masking import (
    PatchMasking,
    TokenMasking,
    bert_mask,
    block_mask,
    random_patch_mask,
    simmim_mask,
)

__all__ = [
    "ImageAugment",
    "ImageViews",
    "PatchMasking",
    "TokenMasking",
    "bert_mask",
    "block_mask",
    "normalize",
    "prepare",
    "random_patch_mask",
    "simmim_mask",
    "to_float",
]
