"""Real data and a real (short) run whose numbers must clear a bar."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfsup import pretrain
from selfsup.cli import PRESETS
from selfsup.data import load_images

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not any(FASHION.glob("train-images-idx3-ubyte*")),
    reason="apt-get install dataset-fashion-mnist",
)
def test_fashion_mnist_from_the_debian_package():
    train, test = load_images("fashion-mnist", "train"), load_images("fashion-mnist", "test")
    assert len(train) == 60_000 and len(test) == 10_000
    assert train.as_tensor().shape == (60_000, 1, 28, 28) and train.num_classes == 10
    assert sorted(set(test.labels().tolist())) == list(range(10))


@pytest.mark.slow
def test_short_simclr_run_on_digits_beats_random_init(tmp_path):
    run = pretrain(
        PRESETS / "demo.yaml",
        out=str(tmp_path / "run"),
        train={"max_steps": 120, "progress": False},
        eval={"label_fractions": [1.0], "seeds": [0], "report": False},
    )
    acc = {(r["encoder"], r["protocol"]): r["accuracy"] for r in run.eval_rows}
    assert acc[("simclr", "knn")] > acc[("random-init", "knn")] + 0.01
    assert acc[("simclr", "linear")] > 0.9
