"""Image data sources: a spec string in, a dataset of uint8 samples out.

    dataset = load_images("fashion-mnist", "train")         # or digits, folder:PATH, npz:PATH
    dataset[0]  # {"image": uint8 (1, 28, 28), "label": int64 scalar}
    loader = make_loader(dataset, batch_size=256)            # {"image": (B, C, H, W), "label": (B,)}

Decoding happens in ``__getitem__`` (so in loader workers); augmentation does not happen here.
"""

from selfsup.data.folder import FolderImageDataset, UnreadableImageError
from selfsup.data.images import UNLABELLED, ImageDataset, Sample, TensorImageDataset
from selfsup.data.loader import collate_samples, make_loader
from selfsup.data.sources import DATASETS, load_images

__all__ = [
    "DATASETS",
    "UNLABELLED",
    "FolderImageDataset",
    "ImageDataset",
    "Sample",
    "TensorImageDataset",
    "UnreadableImageError",
    "collate_samples",
    "load_images",
    "make_loader",
]
