"""kNN classifier against a slow reference and a case worked out by hand."""

import math

import pytest
import torch

from selfsup.errors import SelfsupError
from selfsup.evaluate.knn import knn_accuracy, knn_predict


def reference_knn(query, bank, labels, num_classes, k, temperature):
    """One query at a time, the InstDisc/DINO vote written out with python loops."""
    k = min(k, bank.shape[0])
    preds = []
    for q in query:
        sims = []
        for j, b in enumerate(bank):
            sims.append((float(q @ b) / (q.norm() * b.norm()).item(), j))
        sims.sort(key=lambda t: -t[0])
        votes = [0.0] * num_classes
        for s, j in sims[:k]:
            votes[int(labels[j])] += math.exp(s / temperature)
        preds.append(max(range(num_classes), key=lambda c: (votes[c], -c)))
    return torch.tensor(preds)


@pytest.mark.parametrize("k", [1, 5, 20, 200])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
def test_matches_slow_reference(k, temperature):
    g = torch.Generator().manual_seed(k)
    bank = torch.randn(60, 8, generator=g)
    labels = torch.randint(0, 4, (60,), generator=g)
    query = torch.randn(25, 8, generator=g)
    fast = knn_predict(query, bank, labels, 4, k=k, temperature=temperature, chunk_size=7)
    slow = reference_knn(query, bank, labels, 4, k, temperature)
    assert torch.equal(fast, slow)


def test_chunk_size_does_not_change_predictions():
    g = torch.Generator().manual_seed(0)
    bank, query = torch.randn(300, 16, generator=g), torch.randn(100, 16, generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    whole = knn_predict(query, bank, labels, 5, chunk_size=1000)
    assert torch.equal(whole, knn_predict(query, bank, labels, 5, chunk_size=3))
    assert whole.dtype == torch.long and whole.shape == (100,)


def test_hand_worked_vote():
    # Query along x. Bank: one class-0 point at 0° (sim 1) and two class-1 points at
    # 60° (sim 0.5 each). With T = 1: class 0 gets e^1 = 2.72, class 1 gets 2e^0.5 = 3.30,
    # so class 1 wins; with T = 0.1: e^10 = 22026 vs 2e^5 = 297, so class 0 wins.
    bank = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.5, -math.sqrt(3) / 2]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[3.0, 0.0]])  # scale must not matter: cosine similarity
    assert knn_predict(query, bank, labels, 2, k=3, temperature=1.0).tolist() == [1]
    assert knn_predict(query, bank, labels, 2, k=3, temperature=0.1).tolist() == [0]
    assert knn_predict(query, bank, labels, 2, k=1, temperature=1.0).tolist() == [0]


def test_k_is_clamped_to_bank_size():
    bank = torch.eye(3)
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.1, 0.0]])
    # k=50 -> all three vote, T=10: class 0 gets e^0.0995 = 1.10, class 1 e^0.00995 + e^0 = 2.01
    assert knn_predict(query, bank, labels, 2, k=50, temperature=10.0).tolist() == [1]
    assert knn_predict(query, bank, labels, 2, k=1, temperature=10.0).tolist() == [0]


def test_accuracy_on_clustered_data():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 10, generator=g) * 5
    train_y, test_y = torch.arange(90) % 3, torch.arange(30) % 3
    train_x = centers[train_y] + torch.randn(90, 10, generator=g)
    test_x = centers[test_y] + torch.randn(30, 10, generator=g)
    assert knn_accuracy(train_x, train_y, test_x, test_y) == pytest.approx(1.0)


def test_bad_inputs_raise_selfsup_error():
    bank, labels = torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 0])
    with pytest.raises(SelfsupError, match="width"):
        knn_predict(torch.randn(2, 3), bank, labels, 2)
    with pytest.raises(SelfsupError, match="k must"):
        knn_predict(torch.randn(2, 4), bank, labels, 2, k=0)
    with pytest.raises(SelfsupError, match="labels"):
        knn_predict(torch.randn(2, 4), bank, labels, 1)
