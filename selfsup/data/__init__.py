"""Data sources: a spec string in, a dataset of uint8 images or int64 token rows out.

    dataset = load_images("fashion-mnist", "train")         # or digits, folder:PATH, npz:PATH
    dataset[0]  # {"image": uint8 (1, 28, 28), "label": int64 scalar}
    loader = make_loader(dataset, batch_size=256)            # {"image": (B, C, H, W), "label": (B,)}

Decoding happens in ``__getitem__`` (so in loader workers); augmentation does not happen here.
"""

from selfsup.data.folder import FolderImageDataset, UnreadableImageError
from selfsup.data.images import UNLABELLED, ImageDataset, Sample, TensorImageDataset
from selfsup.data.loader import collate_samples, make_loader
from selfsup.data.sources import DATASETS, load_images
from selfsup.data.text import TEXT_DATASETS, TextCorpus, TextDataset, load_texts

__all__ = [
    "DATASETS",
    "TEXT_DATASETS",
    "TextCorpus",
    "TextDataset",
    "UNLABELLED",
    "FolderImageDataset",
    "ImageDataset",
    "Sample",
    "TensorImageDataset",
    "UnreadableImageError",
    "collate_samples",
    "load_images",
    "load_texts",
    "make_loader",
]
