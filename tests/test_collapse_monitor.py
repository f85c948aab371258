"""The collapse monitor on real short runs: SimSiam without its stop-gradient collapses (the
paper's Fig. 2) and the monitor says so, or stops the run; with it, the same thresholds stay
silent over the same budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning_fabric import Fabric

from selfsup.api import make_config
from selfsup.data import load_images
from selfsup.encoders import build_encoder
from selfsup.engine import CollapseDetected, train
from selfsup.engine.checkpoint import latest_checkpoint
from selfsup.errors import SelfsupError
from selfsup.methods import DataInfo, build_method


def simsiam_run(tmp: Path, stop_gradient: bool):
    cfg = make_config(
        method="simsiam",
        encoder="convnet",
        encoder_args={"width": 8},
        data="digits",
        # the paper's crops (0.08-1), not the milder ones fitted to 8-px images: the views
        # differ enough that the collapse shows within 20 steps, as in the paper's Fig. 2
        method_args={"stop_gradient": stop_gradient, "augment": {"crop_scale": [0.08, 1.0]}},
        train={
            "batch_size": 32,
            "max_steps": 20,
            "lr": 0.02,
            "precision": "32-true",
            "collapse_every": 10,
            # the projection is 64-wide here: rank < 3 of 64 is collapse (stop-gradient keeps ≳ 6)
            "collapse_rank_min": 3.0,
            "collapse_stop": True,
            "checkpoint_every": 5,
            "log_every": 5,
            "progress": False,
        },
        out=str(tmp),
    )
    torch.manual_seed(cfg.train.seed)
    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=8)
    method = build_method("simsiam", cfg.method_args, encoder, DataInfo(1, 8))
    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    return lambda: train(fabric, cfg, method, load_images("digits", "train"), tmp)


def test_simsiam_without_stop_gradient_collapses_and_the_run_stops(tmp_path, capsys):
    run = simsiam_run(tmp_path, stop_gradient=False)
    with pytest.raises(CollapseDetected) as caught:
        run()
    message = str(caught.value)
    assert isinstance(caught.value, SelfsupError)
    printed = capsys.readouterr()
    assert "COLLAPSE WARNING" in printed.out + printed.err
    assert "collapse at step" in message and "effective rank" in message
    assert "train.collapse_stop" in message and "lower train.lr" in message
    stopped_at = int(message.split("collapse at step ")[1].split(":")[0])
    kept = latest_checkpoint(tmp_path)
    assert kept is not None and str(kept) in message
    assert int(kept.stem.split("-")[1]) < stopped_at  # the collapsed state was not saved


def test_simsiam_with_stop_gradient_does_not_trip_the_same_thresholds(tmp_path, capsys):
    result = simsiam_run(tmp_path, stop_gradient=True)()
    assert result.steps == 20
    printed = capsys.readouterr()
    assert "COLLAPSE" not in printed.out + printed.err
