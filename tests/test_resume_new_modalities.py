"""TS2Vec, VideoMAE and the speech methods resume exactly: a run interrupted after its checkpoint and resumed from
it repeats the uninterrupted run's losses bit for bit (crops, timestamp and tube masks are
drawn from the RNG state the checkpoint restores; HuBERT's k-means centres are buffers)."""

from __future__ import annotations

import pytest
import torch
from lightning_fabric import Fabric
from method_setups import WaveSamples, setup

from selfsup.api import make_config
from selfsup.data.series import SeriesDataset
from selfsup.data.video import VideoDataset
from selfsup.engine import train
from selfsup.engine.checkpoint import latest_checkpoint
from selfsup.methods import build_method


class Interrupt(Exception):
    pass


DATA = {"series": "series:random", "video": "video:random", "audio": "audio:random"}


def tiny_run(name: str, modality: str, tmp):
    cfg = make_config(
        method=name,
        data=DATA[modality],
        train={"batch_size": 8, "max_steps": 6, "checkpoint_every": 3, "progress": False},
        out=str(tmp),
    )
    torch.manual_seed(0)
    info, encoder, batch = setup(name, modality, 32)
    inputs = batch[modality]
    if modality == "audio":
        dataset = WaveSamples(inputs)
    elif modality == "series":
        dataset = SeriesDataset(inputs, None, name=DATA[modality], split="train")
    else:
        dataset = VideoDataset(inputs, None, name=DATA[modality], split="train")
    method = build_method(name, {}, encoder, info)
    return Fabric(accelerator="cpu", devices=1, precision="32-true"), cfg, method, dataset


@pytest.mark.parametrize(
    "name, modality",
    [
        ("ts2vec", "series"),
        ("masked-patches", "series"),
        ("videomae", "video"),
        ("wav2vec2", "audio"),
        ("hubert", "audio"),
        ("data2vec", "audio"),
    ],
)
def test_an_interrupted_run_resumes_with_identical_losses(tmp_path, name, modality):
    full = train(*tiny_run(name, modality, tmp_path / "a"), tmp_path / "a")
    assert full.steps == 6

    def crash(step: int, loss: float) -> None:
        if step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(*tiny_run(name, modality, tmp_path / "b"), tmp_path / "b", on_step=crash)
    ckpt = latest_checkpoint(tmp_path / "b")
    assert ckpt is not None and ckpt.name == "step-000003.ckpt"
    torch.manual_seed(1234)  # the resumed RNG must come from the checkpoint
    resumed = train(*tiny_run(name, modality, tmp_path / "b"), tmp_path / "b", resume_from=ckpt)
    assert resumed.start_step == 3
    for step in range(4, 7):
        assert resumed.losses[step] == full.losses[step], f"step {step}"
