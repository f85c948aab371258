"""Video: uint8 clips (T, C, H, W), batches ``{"video": uint8 (B, T, C, H, W)}``.

Sources are in ``selfsup.data.video`` (moving Fashion-MNIST made from the real images, and the
user's clip arrays). The encoder input is the clip scaled to [-1, 1]; the raw-input baseline
is the pixels of every frame, flattened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from selfsup.data.loader import collate_samples
from selfsup.data.video import VIDEO_SOURCES, load_video
from selfsup.errors import SelfsupError
from selfsup.modalities.channels import check_channels

if TYPE_CHECKING:
    from selfsup.config import DataConfig, EvalConfig, RunConfig
    from selfsup.data.info import DataInfo
    from selfsup.recipe import Choice


class VideoModality:
    name = "video"
    input_key = "video"
    corruptions: tuple[str, ...] = ()
    sources = VIDEO_SOURCES
    default_encoder = "video-vit-tiny"
    finetune_augment: Callable[[Tensor], Tensor] | None = None

    def owns(self, spec: str) -> bool:
        return spec.partition(":")[0].strip().lower() in self.sources

    def guess(self, spec: str) -> str | None:
        return None  # a clip array looks like an image array: npz: claims it

    def check_data(self, data: DataConfig) -> None:
        if data.image_size is not None:
            raise SelfsupError(
                "data.image_size is for images; clips keep their own size (a folder of video "
                "files takes video:FOLDER:size=N)"
            )

    def prepare_run(self, data: DataConfig, run_dir: Path) -> None:
        return None  # clips need nothing trained before the workers start

    def load(self, spec: str, split: Any, *, folder: Path | None = None, **options: Any) -> Any:
        del folder  # clips need nothing from the run folder
        return load_video(spec, split, **options)

    def run_options(self, data: DataConfig) -> dict[str, Any]:
        """Video files: pretraining draws each clip's start at random (a new clip of the
        video in every epoch)."""
        return {"skip_bad": data.skip_bad, "random_start": True}

    def eval_options(self, export: dict[str, Any], data: DataConfig | None) -> dict[str, Any]:
        """Video files: the centred clip, at the frames and size the encoder was trained on
        unless the spec says otherwise."""
        return {
            "skip_bad": data.skip_bad if data is not None else False,
            "frames": export.get("frames"),
            "image_size": export.get("image_size"),
        }

    def data_info(self, dataset: Any, cfg: RunConfig, folder: Path) -> dict[str, Any]:
        return {
            "channels": dataset.channels,
            "image_size": dataset.image_size,
            "max_length": dataset.frames,
        }

    def fitted_defaults(self, cfg: RunConfig, info: DataInfo) -> list[Choice]:
        return []  # no option of its methods depends on the data yet

    def encoder_inputs(self, info: DataInfo) -> dict[str, Any]:
        return {
            "in_channels": info.channels,
            "image_size": info.image_size,
            "frames": info.max_length,
        }

    def export(self, info: DataInfo, folder: Path) -> dict[str, Any]:
        return {
            "image_size": info.image_size,
            "channels": info.channels,
            "frames": info.max_length,
            "input": {
                "dtype": "uint8 clips (B, T, C, H, W) scaled to [0, 1]",
                "mean": 0.5,
                "std": 0.5,
            },
        }

    def to_input(self, encoder: nn.Module) -> Callable[[Tensor], Tensor]:
        from selfsup.methods.videomae import to_clip_input

        return to_clip_input

    def check_encoder(self, encoder: nn.Module, dataset: Any, spec: str) -> None:
        """Channels as for images, and the clip length: the space-time ViT's position
        embeddings are for the number of frames it was trained on."""
        check_channels(encoder, dataset.channels, spec, "clips")
        frames = (getattr(encoder, "build_args", None) or {}).get("frames")
        if frames is not None and dataset.frames != frames:
            than = "shorter" if dataset.frames < frames else "longer"
            raise SelfsupError(
                f"{spec!r} has clips of {dataset.frames} frames, {than} than the {frames} the "
                f"encoder was trained on: pass clips of {frames} frames (a folder of video "
                f"files: video:FOLDER:frames={frames})"
            )

    def collate(self, samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        return collate_samples(samples)

    def raw_features(self, train: Any, test: Any, ev: EvalConfig) -> tuple[Tensor, Tensor]:
        """Every frame's pixels scaled to [0, 1], flattened: (N, T·C·H·W)."""
        from selfsup.evaluate.features import stream_inputs

        def pixels(dataset: Any) -> Tensor:
            return stream_inputs(dataset, self.input_key, ev.batch_size)[0].flatten(1).float() / 255

        return pixels(train), pixels(test)

    def decoder(self, info: DataInfo, embed_dim: int) -> nn.Module | None:
        return None  # no clip decoder has been written yet

    def example_input(self, encoder: nn.Module, batch_size: int, seed: int = 0) -> Tensor:
        """Random uint8 clips as ``to_input`` makes them: (B, T, C, H, W) float."""
        build = getattr(encoder, "build_args", None) or {}
        channels, size = int(build.get("in_channels", 1)), int(build.get("image_size", 32))
        frames = int(build.get("frames", 8))
        g = torch.Generator().manual_seed(seed)
        clips = torch.randint(0, 256, (batch_size, frames, channels, size, size), generator=g)
        return self.to_input(encoder)(clips.to(torch.uint8))

    def corrupted(self, dataset: Any, kind: str, severity: int, seed: int = 0) -> Any:
        from selfsup.modalities import no_shifts

        raise no_shifts(self.name)

    def raw_baseline(
        self,
        train: Any,
        test: Any,
        ev: EvalConfig,
        probes: list[str],
        progress: Callable[[str], None],
    ) -> list[dict[str, Any]]:
        """Linear probe and kNN on every frame's pixels scaled to [0, 1], flattened."""
        from selfsup.evaluate.features import dataset_labels
        from selfsup.evaluate.protocol import FeatureSet, probe_raw

        train_x, test_x = self.raw_features(train, test, ev)
        raw = FeatureSet(train_x, dataset_labels(train), test_x, dataset_labels(test))
        return probe_raw(raw, ev, probes, progress)

    def extra_evaluation(
        self,
        models: dict[str, nn.Module],
        spec: str,
        folder: Path | None,
        options: dict[str, Any],
        ev: EvalConfig,
    ) -> dict[str, list[dict[str, Any]]]:
        return {}

    def tiny_batch(self, batch_size: int, seed: int = 0) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed)
        clips = torch.randint(0, 256, (batch_size, 4, 1, 8, 8), generator=g, dtype=torch.uint8)
        return {"video": clips, "label": torch.arange(batch_size) % 2}


VIDEO = VideoModality()
