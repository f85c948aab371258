"""Audio: speech recordings, batches ``{"audio": float32 (B, T)}`` at the run's sample rate.

Sources are in ``selfsup.data.audio`` (``audio:PATH``, ``asterisk``, ``asterisk-digits``);
every sample is cut or padded to ``data.max_seconds``, the padding written as NaN so that the
mask travels with the waveform (the encoder and the baseline read it back). The encoder input
is the batch as it is; the raw-input baseline is the mean and standard deviation of 13 MFCCs
over each utterance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from selfsup.data.audio import AUDIO_DATASETS, load_audio, split_padding
from selfsup.data.loader import collate_samples
from selfsup.errors import SelfsupError

if TYPE_CHECKING:
    from selfsup.config import DataConfig, EvalConfig, RunConfig
    from selfsup.data.info import DataInfo
    from selfsup.recipe import Choice

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
MIN_RATE, MAX_RATE = 1000, 192_000
MAX_SECONDS = 600.0


class AudioModality:
    name = "audio"
    input_key = "audio"
    corruptions: tuple[str, ...] = ()
    sources = AUDIO_DATASETS
    default_encoder = "wav2vec2-tiny"
    finetune_augment: Callable[[Tensor], Tensor] | None = None

    def owns(self, spec: str) -> bool:
        prefix = spec.partition(":")[0].strip().lower()
        return prefix in self.sources

    def guess(self, spec: str) -> str | None:
        path = Path(spec).expanduser()
        looks = path.suffix.lower() in AUDIO_SUFFIXES or (
            path.is_dir() and any(p.suffix.lower() in AUDIO_SUFFIXES for p in path.iterdir())
        )
        return f"did you mean audio:{spec}?" if looks else None

    def check_data(self, data: DataConfig) -> None:
        if not MIN_RATE <= data.sample_rate <= MAX_RATE:
            raise SelfsupError(
                f"data.sample_rate must lie between {MIN_RATE} and {MAX_RATE} Hz, got {data.sample_rate}"
            )
        if not 0 < data.max_seconds <= MAX_SECONDS:
            raise SelfsupError(
                f"data.max_seconds must lie in (0, {MAX_SECONDS:g}], got {data.max_seconds}"
            )

    def prepare_run(self, data: DataConfig, run_dir: Path) -> None:
        return None  # audio needs nothing trained before the workers start

    def load(self, spec: str, split: Any, *, folder: Path | None = None, **options: Any) -> Any:
        del folder  # audio needs nothing from the run folder
        return load_audio(spec, split, **options)

    def run_options(self, data: DataConfig) -> dict[str, Any]:
        return {
            "sample_rate": data.sample_rate,
            "max_seconds": data.max_seconds,
            "skip_bad": data.skip_bad,
        }

    def eval_options(self, export: dict[str, Any], data: DataConfig | None) -> dict[str, Any]:
        if data is not None:
            return {
                "sample_rate": data.sample_rate,
                "max_seconds": data.max_seconds,
                "skip_bad": data.skip_bad,
            }
        return {
            "sample_rate": export.get("sample_rate", 16000),
            "max_seconds": export.get("max_seconds", 4.0),
        }

    def data_info(self, dataset: Any, cfg: RunConfig, folder: Path) -> dict[str, Any]:
        return {"sample_rate": dataset.sample_rate, "max_samples": dataset.max_samples}

    def fitted_defaults(self, cfg: RunConfig, info: DataInfo) -> list[Choice]:
        """Masked spans from the frame rate: the papers' spans of 10 frames are 200 ms of
        20 ms frames (16 kHz, hop 320); an encoder whose frames last longer or shorter gets
        spans of the same duration, and a start chance that hides the same share."""
        return fitted_mask_spans(cfg, info.sample_rate, self.default_encoder)

    def encoder_inputs(self, info: DataInfo) -> dict[str, Any]:
        return {"sample_rate": info.sample_rate}

    def export(self, info: DataInfo, folder: Path) -> dict[str, Any]:
        return {
            "sample_rate": info.sample_rate,
            "max_seconds": info.max_samples / info.sample_rate,
            "input": {
                "dtype": "float32 (B, T) mono waveforms at sample_rate; NaN marks padding",
                "sample_rate": info.sample_rate,
            },
        }

    def to_input(self, encoder: nn.Module) -> Callable[[Tensor], Tensor]:
        return lambda wave: wave  # the encoder reads the NaN padding itself

    def check_encoder(self, encoder: nn.Module, dataset: Any, spec: str) -> None:
        rate = (getattr(encoder, "build_args", None) or {}).get("sample_rate")
        if rate is not None and dataset.sample_rate != rate:
            raise SelfsupError(
                f"{spec!r} was loaded at {dataset.sample_rate} Hz but the encoder was trained "
                f"at {rate} Hz: pass --set data.sample_rate={rate}"
            )

    def collate(self, samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Samples are cut or padded to one length when decoded; the padding mask is their
        NaN tail."""
        batch = collate_samples(samples)
        batch["padding"] = batch[self.input_key].isnan()  # (B, T)
        return batch

    def raw_features(self, train: Any, test: Any, ev: EvalConfig) -> tuple[Tensor, Tensor]:
        """Each utterance's MFCC mean and standard deviation (26 numbers)."""
        return self._mfcc_stats(train, ev)[0], self._mfcc_stats(test, ev)[0]

    def _mfcc_stats(self, dataset: Any, ev: EvalConfig) -> tuple[Tensor, Tensor]:
        from selfsup.evaluate.features import map_batches, root_dataset
        from selfsup.views.spectrogram import mfcc_stats

        rate = root_dataset(dataset).sample_rate
        x, y = map_batches(
            lambda wave: mfcc_stats(*split_padding(wave), rate),
            dataset,
            batch_size=ev.batch_size,
            input_key=self.input_key,
        )
        if y is None:
            raise SelfsupError("the MFCC baseline needs labelled audio")
        return x, y

    def decoder(self, info: DataInfo, embed_dim: int) -> nn.Module | None:
        return None  # no waveform decoder has been written yet

    def example_input(self, encoder: nn.Module, batch_size: int, seed: int = 0) -> Tensor:
        """One second of random waveform at the encoder's sample rate: (B, rate) float."""
        rate = int((getattr(encoder, "build_args", None) or {}).get("sample_rate", 8000))
        g = torch.Generator().manual_seed(seed)
        return 0.1 * torch.randn(batch_size, rate, generator=g)

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
        """Linear probe and kNN on each utterance's MFCC mean and std (26 numbers)."""
        from selfsup.evaluate.protocol import FeatureSet, evaluate_features

        train_x, train_y = self._mfcc_stats(train, ev)
        test_x, test_y = self._mfcc_stats(test, ev)
        rows = evaluate_features(
            {"raw": FeatureSet(train_x, train_y, test_x, test_y)},
            fractions=ev.label_fractions,
            seeds=ev.seeds,
            protocols=probes,  # type: ignore[arg-type]
            k=ev.knn_k,
            temperature=ev.knn_temperature,
            progress=lambda text: progress(f"MFCC baseline: {text}"),
        )
        return [{**row, "features": "mfcc-stats"} for row in rows]

    def extra_evaluation(
        self,
        models: dict[str, nn.Module],
        spec: str,
        folder: Path | None,
        options: dict[str, Any],
        ev: EvalConfig,
    ) -> dict[str, list[dict[str, Any]]]:
        """With the ``ctc`` protocol: CTC fine-tuning of each encoder on ``eval.ctc_minutes``
        of transcribed recordings of ``eval.ctc_data`` (default: the evaluation data), CER and
        WER on its held-out split (`selfsup.evaluate.ctc`)."""
        if "ctc" not in ev.protocols:
            return {}
        from selfsup.evaluate.ctc import Alphabet, CTCConfig, ctc_finetune

        cfg = CTCConfig(
            minutes=ev.ctc_minutes,
            epochs=ev.ctc_epochs,
            lr=ev.ctc_lr,
            max_seconds=ev.ctc_max_seconds,
        )
        source = ev.ctc_data or spec
        load = {**options, "max_seconds": cfg.max_seconds}  # whole utterances, not cut
        train, test = (self.load(source, split, **load) for split in ("train", "test"))
        skip_bad = bool(options.get("skip_bad")) or getattr(train, "skips_bad", False)
        rows = ctc_finetune(models, train, test, cfg, Alphabet(ev.ctc_alphabet), skip_bad=skip_bad)
        return {"ctc.json": rows}

    def tiny_batch(self, batch_size: int, seed: int = 0) -> dict[str, Tensor]:
        """Half a second at 8 kHz of tones and noise; odd rows end early (NaN padding)."""
        g = torch.Generator().manual_seed(seed)
        t = torch.arange(4000) / 8000
        freqs = 200 + 600 * torch.rand(batch_size, 1, generator=g)
        wave = torch.sin(2 * torch.pi * freqs * t) + 0.1 * torch.randn(
            batch_size, 4000, generator=g
        )
        wave[1::2, 3000:] = float("nan")
        return {"audio": wave.float(), "label": torch.arange(batch_size) % 2}


AUDIO = AudioModality()


PAPER_FRAME_SECONDS = 0.02
"""The frame of wav2vec 2.0, HuBERT and data2vec-audio: a hop of 320 samples at 16 kHz."""

SPAN_FIELDS = (("mask_prob", "mask_length"), ("span_start_prob", "span_length"))
"""(start chance, span length) option names of the span-masking methods' configs."""


def encoder_hop(cfg: RunConfig, default_encoder: str) -> int | None:
    """Waveform samples per frame of the run's encoder (the product of its conv strides);
    None for an encoder without a strided feature encoder."""
    from selfsup.encoders import run_encoder_option

    strides = run_encoder_option(cfg, default_encoder, "conv_strides")
    return math.prod(int(stride) for stride in strides) if strides else None


def span_for_frames(paper_prob: float, paper_length: int, frame: float) -> tuple[int, float]:
    """The paper's span (``paper_length`` frames of 20 ms, each frame starting one with chance
    ``paper_prob``) for frames of ``frame`` seconds: spans of the same duration, and a start
    chance that hides about the same share of the audio."""
    length = max(1, round(paper_length * PAPER_FRAME_SECONDS / frame))
    return length, round(min(0.99, paper_prob * paper_length / length), 6)


def fitted_mask_spans(
    cfg: RunConfig, sample_rate: int | None, default_encoder: str
) -> list[Choice]:
    """The span length and start chance of a span-masking method that leaves them to the data
    (None), fitted to the encoder's frame duration; nothing for a method without spans or an
    encoder without a known hop. A named length keeps its start chance (the paper's if unset)."""
    from selfsup.methods import method_spec
    from selfsup.recipe import Choice

    paper = getattr(method_spec(cfg.method).config, "paper_span", None)
    fields = next(((p, n) for p, n in SPAN_FIELDS if n in cfg.method_args), None)
    hop = encoder_hop(cfg, default_encoder)
    if paper is None or fields is None or hop is None or not sample_rate:
        return []
    prob_key, length_key = fields
    paper_prob, paper_length = float(paper[0]), int(paper[1])
    if cfg.method_args.get(length_key) is not None:
        if cfg.method_args.get(prob_key) is not None:
            return []
        return [
            Choice(
                f"method_args.{prob_key}",
                paper_prob,
                f"span start chance {paper_prob:g}: the paper's, for the spans named",
            )
        ]
    frame = hop / sample_rate
    length, prob = span_for_frames(paper_prob, paper_length, frame)
    choices = [
        Choice(
            f"method_args.{length_key}",
            length,
            f"{length}-frame masked spans ({1000 * length * frame:.0f} ms): frames are "
            f"{1000 * frame:g} ms ({hop} samples at {sample_rate} Hz; the paper's spans are "
            f"{paper_length} frames of 20 ms)",
        )
    ]
    if cfg.method_args.get(prob_key) is None:
        choices.append(
            Choice(
                f"method_args.{prob_key}",
                prob,
                f"span start chance {prob:g}: "
                + (
                    "the paper's"
                    if length == paper_length
                    else f"the paper's {paper_prob:g} × {paper_length} / {length} frames, so "
                    "about the same share of the audio is hidden"
                ),
            )
        )
    return choices
