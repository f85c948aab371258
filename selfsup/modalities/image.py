"""Images: uint8 (C, H, W) samples, batches ``{"image": uint8 (B, C, H, W)}``.

Sources are in ``selfsup.data.sources``; the encoder input is the batch scaled to [0, 1] and
normalised (``selfsup.views.prepare``); the raw-input baseline is the pixels themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from selfsup.data.loader import collate_samples
from selfsup.data.sources import DATASETS, guess_image_spec, load_images
from selfsup.errors import SelfsupError
from selfsup.modalities.channels import check_channels
from selfsup.views.corruptions import IMAGE_CORRUPTIONS

if TYPE_CHECKING:
    from selfsup.config import DataConfig, EvalConfig, RunConfig
    from selfsup.data.info import DataInfo
    from selfsup.recipe import Choice

MAX_IMAGE_SIZE = 4096
"""Largest ``data.image_size``: every image is decoded at this size, so a typo such as
100000 would ask for terabytes before the first step."""


def _finetune_augment(x: Tensor) -> Tensor:
    from selfsup.evaluate.finetune import image_finetune_augment

    return image_finetune_augment(x)


class ImageModality:
    name = "image"
    input_key = "image"
    sources = DATASETS
    default_encoder = "convnet"
    finetune_augment: Callable[[Tensor], Tensor] | None = staticmethod(_finetune_augment)
    corruptions = tuple(IMAGE_CORRUPTIONS)

    def owns(self, spec: str) -> bool:
        from selfsup.data.webdataset import holds

        return holds(spec, self.sources, self.name, unreadable=True)

    def guess(self, spec: str) -> str | None:
        return guess_image_spec(spec)

    def check_data(self, data: DataConfig) -> None:
        size = data.image_size
        if size is not None and not 1 <= size <= MAX_IMAGE_SIZE:
            raise SelfsupError(
                f"data.image_size must lie between 1 and {MAX_IMAGE_SIZE} pixels, got {size}"
            )

    def prepare_run(self, data: DataConfig, run_dir: Path) -> None:
        return None  # images need nothing trained before the workers start

    def load(self, spec: str, split: Any, *, folder: Path | None = None, **options: Any) -> Any:
        del folder  # images need nothing from the run folder
        return load_images(spec, split, **options)

    def run_options(self, data: DataConfig) -> dict[str, Any]:
        return {"skip_bad": data.skip_bad, "image_size": data.image_size}

    def eval_options(self, export: dict[str, Any], data: DataConfig | None) -> dict[str, Any]:
        return {"image_size": data.image_size if data else export.get("image_size")}

    def data_info(self, dataset: Any, cfg: RunConfig, folder: Path) -> dict[str, Any]:
        return {
            "channels": dataset.channels,
            "image_size": dataset.image_size[0],
            "channels_last": cfg.train.channels_last,
        }

    def fitted_defaults(self, cfg: RunConfig, info: DataInfo) -> list[Choice]:
        """Crop scale and blur of every view recipe of the method, and a multi-crop method's
        number of local crops, from the image size."""
        from selfsup.views.image import fitted_augments
        from selfsup.views.multicrop import fitted_local_crops

        return fitted_augments(cfg.method_args, info.image_size) + fitted_local_crops(
            cfg, info.image_size, self.default_encoder
        )

    def encoder_inputs(self, info: DataInfo) -> dict[str, Any]:
        return {"in_channels": info.channels, "image_size": info.image_size}

    def export(self, info: DataInfo, folder: Path) -> dict[str, Any]:
        from selfsup.views.image import MEAN, STD

        return {
            "image_size": info.image_size,
            "channels": info.channels,
            "input": {"dtype": "uint8 image scaled to [0, 1]", "mean": MEAN, "std": STD},
        }

    def to_input(self, encoder: nn.Module) -> Callable[[Tensor], Tensor]:
        from selfsup.views import prepare

        channels = (getattr(encoder, "build_args", None) or {}).get("in_channels")

        def to_input(x: Tensor) -> Tensor:
            return x if x.is_floating_point() else prepare(x, channels=channels)

        return to_input

    def check_encoder(self, encoder: nn.Module, dataset: Any, spec: str) -> None:
        check_channels(encoder, dataset.channels, spec, "images")

    def collate(self, samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        return collate_samples(samples)

    def raw_baseline(
        self,
        train: Any,
        test: Any,
        ev: EvalConfig,
        probes: list[str],
        progress: Callable[[str], None],
    ) -> list[dict[str, Any]]:
        """Linear probe and kNN on the pixels scaled to [0, 1], flattened."""
        from selfsup.evaluate.features import dataset_labels
        from selfsup.evaluate.protocol import FeatureSet, probe_raw

        train_x, test_x = self.raw_features(train, test, ev)
        raw = FeatureSet(train_x, dataset_labels(train), test_x, dataset_labels(test))
        return probe_raw(raw, ev, probes, progress)

    def raw_features(self, train: Any, test: Any, ev: EvalConfig) -> tuple[Tensor, Tensor]:
        """The pixels scaled to [0, 1], flattened: (N, C·H·W) and (Q, C·H·W)."""
        from selfsup.evaluate.features import stream_inputs

        def pixels(dataset: Any) -> Tensor:
            return stream_inputs(dataset, self.input_key, ev.batch_size)[0].flatten(1).float() / 255

        return pixels(train), pixels(test)

    def extra_evaluation(
        self,
        models: dict[str, nn.Module],
        spec: str,
        folder: Path | None,
        options: dict[str, Any],
        ev: EvalConfig,
    ) -> dict[str, list[dict[str, Any]]]:
        return {}

    def corrupted(self, dataset: Any, kind: str, severity: int, seed: int = 0) -> Any:
        """The images decoded once and corrupted in batches of 512 (`corrupt_images`), each
        batch seeded by ``seed`` and its position, held in memory."""
        from selfsup.data.images import TensorImageDataset
        from selfsup.evaluate.features import dataset_labels, root_dataset, stream_inputs
        from selfsup.views.corruptions import corrupt_images

        images, _ = stream_inputs(dataset, self.input_key)  # uint8 (N, C, H, W)
        shifted = torch.cat(
            [
                corrupt_images(images[start : start + 512], kind, severity, seed + start)
                for start in range(0, len(images), 512)
            ]
        )
        root = root_dataset(dataset)
        return TensorImageDataset(
            shifted,
            dataset_labels(dataset),
            name=root.name,
            split="test",
            class_names=getattr(root, "class_names", None),
        )

    def decoder(self, info: DataInfo, embed_dim: int) -> nn.Module | None:
        """A transposed-conv decoder to (C, S, S) normalised pixels at the run's image size."""
        from selfsup.modalities.image_decoder import ImageDecoder

        return ImageDecoder(embed_dim, info.channels, info.image_size)

    def example_input(self, encoder: nn.Module, batch_size: int, seed: int = 0) -> Tensor:
        """Random images scaled and normalised as ``to_input`` makes them: (B, C, H, W) float."""
        build = getattr(encoder, "build_args", None) or {}
        g = torch.Generator().manual_seed(seed)
        channels, size = int(build.get("in_channels", 3)), int(build.get("image_size", 32))
        images = torch.randint(0, 256, (batch_size, channels, size, size), generator=g)
        return self.to_input(encoder)(images.to(torch.uint8))

    def tiny_batch(self, batch_size: int, seed: int = 0) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (batch_size, 1, 8, 8), generator=g, dtype=torch.uint8)
        return {"image": images, "label": torch.arange(batch_size) % 2}


IMAGE = ImageModality()
