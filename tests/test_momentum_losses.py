"""MoCo v2 / v3, BYOL and SimSiam losses against slow references written the obvious way,
and MoCo's key queue."""

from __future__ import annotations

import math

import pytest
import torch

from selfsup.losses import BYOLLoss, InfoNCELoss, KeyQueue, MoCoV3Loss, SimSiamLoss
from selfsup.losses import infonce as infonce_module


def unit(x: torch.Tensor) -> torch.Tensor:
    return x.double() / x.double().norm(dim=1, keepdim=True)


def infonce_reference(q, k, negatives, t: float) -> float:
    """MoCo's equation (1), query by query."""
    q, k, n = unit(q), unit(k), unit(negatives)
    total = 0.0
    for b in range(q.shape[0]):
        positive = math.exp(float(q[b] @ k[b]) / t)
        rest = sum(math.exp(float(q[b] @ n[j]) / t) for j in range(n.shape[0]))
        total += -math.log(positive / (positive + rest))
    return total / q.shape[0]


def mocov3_reference(q1, q2, k1, k2, t: float) -> float:
    def ctr(q, k):
        q, k = unit(q), unit(k)
        total = 0.0
        for b in range(q.shape[0]):
            den = sum(math.exp(float(q[b] @ k[j]) / t) for j in range(k.shape[0]))
            total += -math.log(math.exp(float(q[b] @ k[b]) / t) / den)
        return 2 * t * total / q.shape[0]

    return ctr(q1, k2) + ctr(q2, k1)


def byol_reference(p1, p2, z1, z2) -> float:
    def reg(p, z):
        p, z = unit(p), unit(z)
        return sum(float(((p[b] - z[b]) ** 2).sum()) for b in range(p.shape[0])) / p.shape[0]

    return reg(p1, z2) + reg(p2, z1)


def simsiam_reference(p1, p2, z1, z2) -> float:
    def d(p, z):
        p, z = unit(p), unit(z)
        return -sum(float(p[b] @ z[b]) for b in range(p.shape[0])) / p.shape[0]

    return 0.5 * d(p1, z2) + 0.5 * d(p2, z1)


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


@pytest.mark.parametrize("batch, dim, k", [(1, 3, 1), (4, 8, 16), (9, 32, 50)])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_infonce_matches_reference(batch, dim, k, temperature):
    g = torch.Generator().manual_seed(batch * 1000 + dim + k)
    q, key, negatives = randn(g, batch, dim), randn(g, batch, dim), randn(g, k, dim)
    got = InfoNCELoss(temperature)(q, key, negatives)
    want = infonce_reference(q, key, negatives, temperature)
    assert float(got) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("batch, dim", [(1, 3), (5, 8), (16, 32)])
@pytest.mark.parametrize("temperature", [0.1, 0.2, 1.0])
def test_mocov3_loss_matches_reference(batch, dim, temperature):
    g = torch.Generator().manual_seed(batch * 100 + dim)
    q1, q2, k1, k2 = (randn(g, batch, dim) for _ in range(4))
    got = MoCoV3Loss(temperature)(q1, q2, k1, k2)
    assert float(got) == pytest.approx(mocov3_reference(q1, q2, k1, k2, temperature), rel=1e-5)


@pytest.mark.parametrize("batch, dim", [(1, 3), (5, 8), (16, 256)])
def test_byol_and_simsiam_losses_match_references(batch, dim):
    g = torch.Generator().manual_seed(batch * 10 + dim)
    p1, p2, z1, z2 = (randn(g, batch, dim) for _ in range(4))
    assert float(BYOLLoss()(p1, p2, z1, z2)) == pytest.approx(
        byol_reference(p1, p2, z1, z2), rel=1e-5
    )
    assert float(SimSiamLoss()(p1, p2, z1, z2)) == pytest.approx(
        simsiam_reference(p1, p2, z1, z2), rel=1e-5, abs=1e-7
    )


def test_hand_computed_cases():
    e = torch.eye(2)
    # q = k = e0, one negative e1: -log(e^{1/τ} / (e^{1/τ} + e^0)) with τ = 0.5
    got = InfoNCELoss(0.5)(e[:1], e[:1], e[1:])
    assert float(got) == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)), rel=1e-6)
    # identical predictions and targets: BYOL 0, SimSiam -1; opposite: BYOL 8, SimSiam +1
    assert float(BYOLLoss()(e, e, e, e)) == pytest.approx(0.0, abs=1e-6)
    assert float(SimSiamLoss()(e, e, e, e)) == pytest.approx(-1.0)
    assert float(BYOLLoss()(e, e, -e, -e)) == pytest.approx(8.0)
    assert float(SimSiamLoss()(e, e, -e, -e)) == pytest.approx(1.0)


def test_simsiam_loss_passes_gradient_to_both_sides_unless_detached():
    p = torch.randn(4, 6, requires_grad=True)
    z = torch.randn(4, 6, requires_grad=True)
    SimSiamLoss()(p, p, z, z).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # the stop-gradient is the method's


def test_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match="negatives"):
        InfoNCELoss()(torch.randn(4, 3), torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="positive"):
        MoCoV3Loss(0.0)
    with pytest.raises(ValueError, match="equal shape"):
        BYOLLoss()(torch.randn(4, 3), torch.randn(4, 3), torch.randn(5, 3), torch.randn(4, 3))


def test_queue_replaces_the_oldest_keys_and_wraps():
    queue = KeyQueue(size=5, dim=2)
    first = queue.keys.clone()
    assert torch.allclose(first.norm(dim=1), torch.ones(5))  # random unit vectors at start
    a, b, c = (torch.tensor([[float(i), 1.0], [1.0, float(i)]]) for i in (2, 3, 4))
    queue.push(a)
    assert int(queue.ptr) == 2
    queue.push(b)
    assert int(queue.ptr) == 4
    assert torch.equal(queue.keys[4], first[4])  # not yet overwritten
    queue.push(c)  # rows 4 and 0: the pointer wraps
    assert int(queue.ptr) == 1
    norm = torch.nn.functional.normalize
    expected = torch.stack(
        [norm(c, dim=1)[1], *norm(a, dim=1)[1:], *norm(b, dim=1), norm(c, dim=1)[0]]
    )
    assert torch.allclose(queue.keys, expected)
    # the state lives in buffers, so checkpoints carry it
    state = queue.state_dict()
    assert set(state) == {"keys", "ptr"}
    restored = KeyQueue(size=5, dim=2)
    restored.load_state_dict(state)
    assert torch.equal(restored.keys, queue.keys) and int(restored.ptr) == 1


def test_queue_enqueues_keys_gathered_from_every_process(monkeypatch):
    """Under DDP each process pushes its own keys; the gathered keys (rank order) go in, so
    every process ends with the same queue."""
    keys = [torch.randn(3, 4), torch.randn(3, 4)]  # what rank 0 and rank 1 computed
    monkeypatch.setattr(infonce_module.distributed, "gather_with_grad", lambda x: torch.cat(keys))
    queues = []
    for own in keys:
        torch.manual_seed(0)
        queue = KeyQueue(size=8, dim=4)
        queue.push(own)
        queues.append(queue)
    assert torch.equal(queues[0].keys, queues[1].keys)
    assert int(queues[0].ptr) == 6
    want = torch.nn.functional.normalize(torch.cat(keys), dim=1)
    assert torch.allclose(queues[0].keys[:6], want)


def test_queue_keeps_the_newest_when_a_push_exceeds_its_size():
    queue = KeyQueue(size=3, dim=2)
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
    queue.push(keys)
    assert int(queue.ptr) == 0
    assert torch.allclose(queue.keys, torch.nn.functional.normalize(keys[1:], dim=1))
