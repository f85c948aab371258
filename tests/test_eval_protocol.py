"""Label-efficiency protocol: balanced subsets, result rows, JSON and table."""

import numpy as np
import pytest
import torch
from rich.console import Console

from selfsup.errors import SelfsupError
from selfsup.evaluate.protocol import (
    FeatureSet,
    class_balanced_subset,
    evaluate_features,
    read_eval_json,
    rows_table,
    write_eval_json,
)

COMMON_KEYS = {
    "encoder": str,
    "protocol": str,
    "label_fraction": float,
    "accuracy": float,
    "std": float,
    "seeds": int,
    "num_train": int,
    "num_test": int,
}
EXTRA_KEYS = {"linear": {"weight_decays": list}, "knn": {"k": int, "temperature": float}}


def test_subset_sizes_and_balance_on_a_large_sample():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=50_000)
    counts = np.bincount(labels)
    idx = class_balanced_subset(labels, 0.01, seed=0)
    assert np.unique(idx).size == idx.size and np.all(np.diff(idx) > 0)
    expected = np.floor(0.01 * counts + 0.5).astype(int)
    assert np.array_equal(np.bincount(labels[idx], minlength=10), expected)


def test_subset_keeps_at_least_one_per_class():
    labels = np.repeat(np.arange(4), [3, 5, 40, 100])
    idx = class_balanced_subset(labels, 0.01, seed=0)
    assert np.array_equal(np.bincount(labels[idx]), [1, 1, 1, 1])


def test_full_fraction_returns_everything():
    labels = np.array([2, 0, 1, 1, 0])
    assert np.array_equal(class_balanced_subset(labels, 1.0, seed=5), np.arange(5))


def test_subset_is_deterministic_per_seed_and_differs_across_seeds():
    labels = np.arange(5000) % 7
    a = class_balanced_subset(labels, 0.1, seed=1)
    assert np.array_equal(a, class_balanced_subset(labels, 0.1, seed=1))
    assert not np.array_equal(a, class_balanced_subset(labels, 0.1, seed=2))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_bad_fraction_raises(fraction):
    with pytest.raises(SelfsupError, match="fraction"):
        class_balanced_subset(np.zeros(10), fraction, seed=0)


def feature_set(spread: float, seed: int) -> FeatureSet:
    """Three gaussian clusters in 6-D: 300 train and 90 test points."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 6, generator=g) * spread
    train_y, test_y = torch.arange(300) % 3, torch.arange(90) % 3
    return FeatureSet(
        train_x=centres[train_y] + torch.randn(300, 6, generator=g),
        train_y=train_y,
        test_x=centres[test_y] + torch.randn(90, 6, generator=g),
        test_y=test_y,
    )


@pytest.fixture(scope="module")
def rows():
    sets = {"good": feature_set(4.0, 0), "noise": feature_set(0.0, 1)}
    calls = []
    result = evaluate_features(sets, fractions=(0.1, 1.0), seeds=(0, 1), progress=calls.append)
    # per encoder: linear 2 seeds + 1, knn 2 seeds + 1
    assert len(calls) == 12 and all(isinstance(c, str) for c in calls)
    return result


def test_rows_have_exactly_the_documented_keys(rows):
    assert len(rows) == 2 * 2 * 2
    for row in rows:
        schema = COMMON_KEYS | EXTRA_KEYS[row["protocol"]]
        assert set(row) == set(schema)
        for key, kind in schema.items():
            assert type(row[key]) is kind, (key, row[key])
        assert 0.0 <= row["accuracy"] <= 1.0 and row["std"] >= 0.0
        assert row["num_test"] == 90


def test_rows_follow_the_protocol(rows):
    by_key = {(r["encoder"], r["protocol"], r["label_fraction"]): r for r in rows}
    full = by_key[("good", "linear", 1.0)]
    assert full["seeds"] == 1 and full["std"] == 0.0 and full["num_train"] == 300
    assert len(full["weight_decays"]) == 1
    few = by_key[("good", "knn", 0.1)]
    assert few["seeds"] == 2 and few["num_train"] == 30 and few["k"] == 20
    assert by_key[("good", "linear", 1.0)]["accuracy"] > 0.95
    assert by_key[("noise", "knn", 1.0)]["accuracy"] < 0.7


def test_json_round_trip(rows, tmp_path):
    path = write_eval_json(rows, tmp_path / "run" / "eval.json")
    assert read_eval_json(path) == rows
    assert path.read_text().startswith("[\n  {")


def test_read_eval_json_errors(tmp_path):
    with pytest.raises(SelfsupError, match="no evaluation results"):
        read_eval_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"a": 1}')
    with pytest.raises(SelfsupError, match="JSON list"):
        read_eval_json(tmp_path / "bad.json")


def test_rows_table_shows_percent_with_std():
    rows = [
        {
            "encoder": "simclr",
            "protocol": "linear",
            "label_fraction": f,
            "accuracy": a,
            "std": s,
            "seeds": 3,
            "num_train": 1,
            "num_test": 1,
        }
        for f, a, s in [(0.01, 0.5, 0.012), (0.1, 0.75, 0.003), (1.0, 0.881, 0.0)]
    ]
    console = Console(record=True, width=120)
    console.print(rows_table(rows, title="eval"))
    text = console.export_text()
    for cell in ["50.0 ± 1.2", "75.0 ± 0.3", "88.1 ± 0.0", "1% labels", "100% labels", "simclr"]:
        assert cell in text


def test_unknown_protocol_raises():
    with pytest.raises(SelfsupError, match="protocol"):
        evaluate_features({"x": feature_set(1.0, 0)}, protocols=("svm",))
