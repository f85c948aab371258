"""Every registered method trains under 2-process DDP on CPU (gloo) through the real engine:
finite losses, the encoder moves, and both processes hold the same weights afterwards.

One spawn runs every method in turn, so the cost of starting processes is paid once.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from lightning_fabric import Fabric
from method_setups import (
    SEQ_LEN,
    WORDS,
    PairSamples,
    WaveSamples,
    audio_setup,
    cases,
    graph_setup,
    image_encoder,
    pair_encoder,
    pair_info,
    series_batch,
    series_encoder,
    series_info,
    text_encoder,
    text_info,
    tokenizer,
    video_batch,
    video_encoder,
    video_info,
)
from spawn import launch_two
from test_methods import ENCODER_PHASE

from selfsup.api import make_config
from selfsup.data.graph import collate_graphs
from selfsup.data.images import TensorImageDataset
from selfsup.data.series import SeriesDataset
from selfsup.data.text import TextCorpus, TextDataset
from selfsup.data.video import VideoDataset
from selfsup.engine import train
from selfsup.methods import DataInfo, build_method

STEPS, BATCH, SIZE = 2, 16, 16

DISTRIBUTED = ("image", "text", "audio", "graph", "series", "video", "pairs")
"""Modalities whose methods run here."""


def _dataset() -> TensorImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4 * BATCH, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return TensorImageDataset(images, None, name="random", split="train")


def _encoder_vector(method: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in method.encoder.parameters()])


def _text_dataset() -> TextDataset:
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(2, 12))) for _ in range(4 * BATCH)]
    corpus = TextCorpus(texts=texts, labels=None, class_names=[], name="random", split="train")
    return TextDataset(corpus, tokenizer(), SEQ_LEN)


DATA = {
    "image": "npz:random",
    "text": "text:random",
    "series": "series:random",
    "video": "video:random",
    "audio": "audio:random",
    "graph": "graph:random",
    "pairs": "pairs:random",
}


def run_config(name: str, modality: str, **train_args):
    """The config of a 2-step run of ``name`` on random data of ``modality``."""
    return make_config(
        method=name,
        encoder="convnet",
        encoder_args={"width": 8},
        data=DATA[modality],  # never read: data is passed in
        train={
            "batch_size": BATCH,
            "max_steps": STEPS,
            "checkpoint_every": 1000,
            "progress": False,
            "channels_last": False,
            **train_args,
        },
    )


def seeded_method(name: str, modality: str):
    """(method, dataset) for ``name`` with seed-0 weights, in its training phase."""
    torch.manual_seed(0)
    if modality == "text":
        info, encoder, dataset = text_info(), text_encoder(name), _text_dataset()
    elif modality == "pairs":
        info, encoder, dataset = pair_info(), pair_encoder(), PairSamples(4 * BATCH)
    elif modality == "series":
        series = series_batch(4 * BATCH)["series"]
        dataset = SeriesDataset(series, None, name="series:random", split="train")
        info, encoder = series_info(), series_encoder(name)
    elif modality == "audio":
        info, encoder, batch = audio_setup(name, 4 * BATCH)
        dataset = WaveSamples(batch["audio"])
    elif modality == "graph":
        info, encoder, batch = graph_setup(4 * BATCH)
        labels = batch["label"]
        dataset = [
            {"graph": g, "label": labels[i]} for i, g in enumerate(batch["graph"].to_data_list())
        ]
    elif modality == "video":
        clips = video_batch(4 * BATCH)["video"]
        dataset = VideoDataset(clips, None, name="video:random", split="train")
        info, encoder = video_info(), video_encoder()
    else:
        info = DataInfo(3, SIZE, channels_last=False)
        encoder, dataset = image_encoder(name, info), _dataset()
    method = build_method(name, {}, encoder, info)
    ENCODER_PHASE.get(name, lambda method: None)(method)
    return method, dataset


def _worker(fabric: Fabric, root: str) -> dict[str, dict[str, float]]:
    results = {}
    for name, modality in cases(DISTRIBUTED):
        cfg = run_config(name, modality)
        method, dataset = seeded_method(name, modality)
        before = _encoder_vector(method)
        collate = collate_graphs if modality == "graph" else None
        result = train(
            fabric, cfg, method, dataset, Path(root) / f"{name}-{modality}", collate=collate
        )
        after = _encoder_vector(method)
        gathered = fabric.all_gather(after)  # (P, n)
        results[f"{name}-{modality}"] = {
            "steps": float(result.steps),
            "finite": float(all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())),
            "moved": float((after - before).abs().max()),
            "rank_gap": float((gathered - gathered[0]).abs().max()),
        }
    return results


@pytest.mark.slow
def test_every_method_trains_under_two_process_ddp(tmp_path):
    results = launch_two(_worker, str(tmp_path))
    assert sorted(results) == sorted(f"{n}-{m}" for n, m in cases(DISTRIBUTED))
    for name, r in results.items():
        assert r["steps"] == STEPS, name
        assert r["finite"] == 1.0, name
        assert r["moved"] > 0, f"{name}: the encoder did not change"
        assert r["rank_gap"] < 1e-6, f"{name}: processes disagree on the weights ({r['rank_gap']})"
