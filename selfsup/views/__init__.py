"""View generators: ``nn.Module``s that turn a batch into the pretext task's inputs, on device."""

from selfsup.views.image import ImageAugment, ImageViews, normalize, prepare, to_float

__all__ = ["ImageAugment", "ImageViews", "normalize", "prepare", "to_float"]
