"""Linear probe: exactness against sklearn, weight-decay choice blind to test labels."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from selfsup.errors import SelfsupError
from selfsup.evaluate.linear import (
    fit_linear_classifier,
    linear_probe,
    standardize,
    stratified_split,
)


def blobs(n: int, d: int, k: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n points in k gaussian clusters of width 1 whose centres lie `spread` apart."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=torch.Generator().manual_seed(1234)) * spread
    y = torch.arange(n) % k
    return centres[y] + torch.randn(n, d, generator=g), y


def test_separable_data_is_classified_perfectly():
    train_x, train_y = blobs(200, 16, 4, spread=6.0, seed=0)
    test_x, test_y = blobs(100, 16, 4, spread=6.0, seed=1)
    result = linear_probe(train_x, train_y, test_x, test_y)
    assert result["accuracy"] == pytest.approx(1.0)
    assert result["wd_selection"] == "validation"
    assert result["val_accuracy"] == pytest.approx(1.0)


def test_agrees_with_sklearn_logistic_regression():
    train_x, train_y = blobs(400, 20, 4, spread=0.6, seed=0)
    test_x, test_y = blobs(400, 20, 4, spread=0.6, seed=1)
    c = 0.05
    wd = 1.0 / (c * train_x.shape[0])  # sklearn: C·Σ CE + ½‖W‖²  ==  N·C·(mean CE + wd/2 ‖W‖²)
    scaler = StandardScaler().fit(train_x.numpy())
    sk = LogisticRegression(C=c, tol=1e-8, max_iter=5000).fit(
        scaler.transform(train_x.numpy()), train_y.numpy()
    )
    sk_acc = sk.score(scaler.transform(test_x.numpy()), test_y.numpy())
    ours = linear_probe(train_x, train_y, test_x, test_y, weight_decays=(wd,))
    assert ours["wd_selection"] == "only-candidate"
    assert 0.4 < sk_acc < 0.95  # a problem where the regulariser matters
    assert ours["accuracy"] == pytest.approx(sk_acc, abs=0.01)

    # Same optimum: the coefficients agree, not only the accuracy.
    xs, _ = standardize(train_x, test_x)
    w, b = fit_linear_classifier(xs, train_y, 4, wd)
    w_sk = torch.tensor(sk.coef_.T, dtype=torch.float32)
    b_sk = torch.tensor(sk.intercept_, dtype=torch.float32)
    # softmax is invariant to a per-row shift; sklearn's L2 makes both sum to zero over classes
    assert torch.allclose(w, w_sk, atol=2e-3)
    assert torch.allclose(b - b.mean(), b_sk - b_sk.mean(), atol=2e-3)


def test_objective_reaches_optimum():
    x, y = blobs(300, 10, 3, spread=0.8, seed=0)
    (xs,) = standardize(x)
    wd = 1e-2
    w, b = fit_linear_classifier(xs, y, 3, wd)
    w.requires_grad_(True)
    b.requires_grad_(True)
    loss = F.cross_entropy(xs @ w + b, y) + 0.5 * wd * w.pow(2).sum()
    loss.backward()
    assert w.grad.abs().max() < 1e-4 and b.grad.abs().max() < 1e-4


def test_weight_decay_choice_ignores_test_labels():
    train_x, train_y = blobs(300, 30, 5, spread=0.5, seed=0)
    test_x, test_y = blobs(200, 30, 5, spread=0.5, seed=1)
    shuffled = test_y[torch.randperm(200, generator=torch.Generator().manual_seed(0))]
    a = linear_probe(train_x, train_y, test_x, test_y, seed=3)
    b = linear_probe(train_x, train_y, test_x, shuffled, seed=3)
    c = linear_probe(train_x, train_y, test_x[:10] * 100, test_y[:10], seed=3)
    assert a["weight_decay"] == b["weight_decay"] == c["weight_decay"]
    assert a["val_accuracy"] == b["val_accuracy"] == c["val_accuracy"]
    assert a["accuracy"] != b["accuracy"]


def test_deterministic_given_seed():
    train_x, train_y = blobs(200, 12, 4, spread=0.5, seed=0)
    test_x, test_y = blobs(100, 12, 4, spread=0.5, seed=1)
    assert linear_probe(train_x, train_y, test_x, test_y, seed=7) == linear_probe(
        train_x, train_y, test_x, test_y, seed=7
    )


def test_one_label_per_class_falls_back_to_middle_weight_decay():
    train_x, train_y = blobs(10, 8, 10, spread=3.0, seed=0)  # one sample per class
    test_x, test_y = blobs(50, 8, 10, spread=3.0, seed=1)
    result = linear_probe(train_x, train_y, test_x, test_y)
    assert result["wd_selection"] == "fallback-middle"
    assert result["weight_decay"] == 1e-4
    assert result["val_accuracy"] is None
    assert "middle weight decay" in result["note"]
    assert 0.0 <= result["accuracy"] <= 1.0


def test_stratified_split_keeps_every_class_on_both_sides():
    labels = np.repeat(np.arange(5), [2, 3, 10, 50, 7])
    fit, val = stratified_split(labels, 0.2, seed=0)
    assert np.intersect1d(fit, val).size == 0 and fit.size + val.size == labels.size
    for c in range(5):
        assert (labels[fit] == c).any() and (labels[val] == c).any()
    assert (labels[val] == 3).sum() == 10
    assert stratified_split(np.array([0, 0, 1]), 0.2, seed=0) is None


def test_bad_inputs_raise():
    x, y = torch.randn(10, 4), torch.arange(10) % 2
    with pytest.raises(SelfsupError, match="width"):
        linear_probe(x, y, torch.randn(3, 5), y[:3])
    with pytest.raises(SelfsupError, match="NaN"):
        linear_probe(x * float("nan"), y, x, y)
    with pytest.raises(SelfsupError, match="val_fraction"):
        linear_probe(x, y, x, y, val_fraction=1.5)
