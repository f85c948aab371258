"""Time series: float32 (T, C) samples, NaN where missing; batches ``{"series": (B, T, C)}``.

Sources are in ``selfsup.data.series`` (the UCR/UEA sets shipped inside the sktime wheel, and
the user's .ts, .npy/.npz and CSV files). A set is NaN-padded to its longest series, so
batches stack without a padding mask: the encoder masks NaN steps itself (TS2Vec's rule).
The raw-input baselines probe the raw values (NaN as 0, padded to the longer split) and
classify by 1-NN under DTW (``selfsup.evaluate.dtw``); every encoder also earns TS2Vec's own
protocol, an RBF SVM on the pooled features, written to ``svm.json`` beside the raw series'
SVM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from selfsup.data.loader import collate_samples
from selfsup.data.series import SERIES_SOURCES, load_series
from selfsup.errors import SelfsupError
from selfsup.modalities.channels import check_channels

if TYPE_CHECKING:
    from selfsup.config import DataConfig, EvalConfig, RunConfig
    from selfsup.data.info import DataInfo
    from selfsup.recipe import Choice


class SeriesModality:
    name = "series"
    input_key = "series"
    corruptions: tuple[str, ...] = ()
    sources = SERIES_SOURCES
    default_encoder = "ts2vec-dilated"
    finetune_augment: Callable[[Tensor], Tensor] | None = None

    def owns(self, spec: str) -> bool:
        return spec.partition(":")[0].strip().lower() in self.sources

    def guess(self, spec: str) -> str | None:
        path = Path(spec).expanduser()
        if path.is_file() and path.suffix.lower() == ".ts":
            return f"did you mean series:{spec}?"
        return None

    def check_data(self, data: DataConfig) -> None:
        if data.image_size is not None:
            raise SelfsupError("data.image_size is for images; series keep their own length")

    def prepare_run(self, data: DataConfig, run_dir: Path) -> None:
        return None  # series need nothing trained before the workers start

    def load(self, spec: str, split: Any, *, folder: Path | None = None, **options: Any) -> Any:
        del folder  # series need nothing from the run folder
        return load_series(spec, split, **options)

    def run_options(self, data: DataConfig) -> dict[str, Any]:
        return {"skip_bad": data.skip_bad}

    def eval_options(self, export: dict[str, Any], data: DataConfig | None) -> dict[str, Any]:
        return {"skip_bad": data.skip_bad} if data else {}

    def data_info(self, dataset: Any, cfg: RunConfig, folder: Path) -> dict[str, Any]:
        return {"channels": dataset.channels, "max_length": dataset.length}

    def fitted_defaults(self, cfg: RunConfig, info: DataInfo) -> list[Choice]:
        return []  # no option of its methods depends on the data yet

    def encoder_inputs(self, info: DataInfo) -> dict[str, Any]:
        return {"in_channels": info.channels}

    def export(self, info: DataInfo, folder: Path) -> dict[str, Any]:
        return {
            "channels": info.channels,
            "input": {"dtype": "float32 series (B, T, C), NaN where a value is missing"},
        }

    def to_input(self, encoder: nn.Module) -> Callable[[Tensor], Tensor]:
        return lambda x: x.float()

    def check_encoder(self, encoder: nn.Module, dataset: Any, spec: str) -> None:
        check_channels(encoder, dataset.channels, spec, "series")

    def collate(self, samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        return collate_samples(samples)

    def raw_features(self, train: Any, test: Any, ev: EvalConfig) -> tuple[Tensor, Tensor]:
        """The raw values, flattened (NaN as 0, zero-padded to the longer split)."""
        train_x, _, test_x, _ = raw_features(train, test, ev.batch_size)
        return train_x, test_x

    def decoder(self, info: DataInfo, embed_dim: int) -> nn.Module | None:
        return None  # no series decoder has been written yet

    def example_input(self, encoder: nn.Module, batch_size: int, seed: int = 0) -> Tensor:
        """Random series of 64 steps in the encoder's channels: (B, 64, C) float."""
        channels = int((getattr(encoder, "build_args", None) or {}).get("in_channels", 1))
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch_size, 64, channels, generator=g)

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
        """Linear probe and kNN on the raw values, flattened (NaN as 0, the shorter split
        padded with 0 to the longer one's length), and 1-NN under full-window DTW on the
        series as they are (the archive's standard baseline), at the same label fractions;
        DTW is skipped with a line when it would sweep more than ``CELLS_IN_EVALUATION``."""
        from selfsup.evaluate.dtw import CELLS_IN_EVALUATION, dtw_cells, nn_dtw_rows
        from selfsup.evaluate.features import stream_inputs
        from selfsup.evaluate.protocol import FeatureSet, probe_raw

        raw = FeatureSet(*raw_features(train, test, ev.batch_size))
        rows = probe_raw(raw, ev, probes, progress)
        train_series = stream_inputs(train, self.input_key, ev.batch_size)
        test_series = stream_inputs(test, self.input_key, ev.batch_size)
        cells = dtw_cells(test_series[0], train_series[0])
        if cells > CELLS_IN_EVALUATION:
            progress(
                f"raw · 1-NN DTW skipped: {len(test_series[0])} × {len(train_series[0])} series "
                f"are {cells:.1e} DTW cells, hours here; benchmarks/ucr_dtw.py computes it alone"
            )
            return rows
        return rows + nn_dtw_rows(train_series, test_series, ev.label_fractions, ev.seeds, progress)

    def extra_evaluation(
        self,
        models: dict[str, nn.Module],
        spec: str,
        folder: Path | None,
        options: dict[str, Any],
        ev: EvalConfig,
    ) -> dict[str, list[dict[str, Any]]]:
        """TS2Vec's protocol: an RBF SVM (C by 5-fold cross-validation on the training split)
        on each encoder's pooled features, and on the raw series when baselines are asked."""
        from selfsup.evaluate.features import dataset_labels, extract_features
        from selfsup.evaluate.svm import svm_accuracy

        train = self.load(spec, "train", folder=folder, **options)
        test = self.load(spec, "test", folder=folder, **options)
        train_y, test_y = dataset_labels(train), dataset_labels(test)
        rows = []
        for label, model in models.items():
            with torch.no_grad():
                train_x = extract_features(
                    model, train, ev.batch_size, to_input=self.to_input(model)
                )
                test_x = extract_features(model, test, ev.batch_size, to_input=self.to_input(model))
            result = svm_accuracy(train_x, train_y, test_x, test_y)
            rows.append(
                {
                    "encoder": label,
                    "data": spec,
                    "svm_accuracy": result["accuracy"],
                    "C": result["C"],
                }
            )
        if ev.baselines:
            train_x, _, test_x, _ = raw_features(train, test, ev.batch_size)
            result = svm_accuracy(train_x, train_y, test_x, test_y)
            rows.append(
                {
                    "encoder": "raw",
                    "data": spec,
                    "svm_accuracy": result["accuracy"],
                    "C": result["C"],
                }
            )
        return {"svm.json": rows}

    def tiny_batch(self, batch_size: int, seed: int = 0) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed)
        series = torch.randn(batch_size, 16, 2, generator=g)
        return {"series": series, "label": torch.arange(batch_size) % 2}


def raw_features(train: Any, test: Any, batch_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The raw values of both splits as flat features (N, T·C): NaN as 0, zero-padded to the
    longer split's length, with their labels."""
    from selfsup.evaluate.features import stream_inputs

    train_x, train_y = stream_inputs(train, "series", batch_size)
    test_x, test_y = stream_inputs(test, "series", batch_size)
    length = max(train_x.shape[1], test_x.shape[1])

    def flat(x: Tensor) -> Tensor:
        x = torch.nan_to_num(x.float(), nan=0.0)
        x = torch.nn.functional.pad(x, (0, 0, 0, length - x.shape[1]))  # (N, length, C)
        return x.flatten(1)

    return flat(train_x), train_y, flat(test_x), test_y


SERIES = SeriesModality()
