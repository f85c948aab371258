"""Barlow Twins and VICReg: each loss against a slow reference written from the papers'
formulas, hand-computed cases, and 2-process DDP giving the loss and gradients of one process
that holds the whole batch (the statistics are those of the global batch)."""

from __future__ import annotations

import math

import pytest
import torch
from lightning_fabric import Fabric
from spawn import launch_two
from torch import nn

from selfsup.encoders import build_encoder
from selfsup.losses import BarlowTwinsLoss, VICRegLoss
from selfsup.methods import DataInfo, build_method


def barlow_reference(z1: torch.Tensor, z2: torch.Tensor, lam: float) -> float:
    """Standardise each dimension over the batch, correlate, sum the penalties: loops only."""
    n, d = z1.shape
    z1, z2 = z1.double().tolist(), z2.double().tolist()

    def standardised(z: list[list[float]]) -> list[list[float]]:
        out = [[0.0] * d for _ in range(n)]
        for j in range(d):
            column = [z[b][j] for b in range(n)]
            mean = sum(column) / n
            var = sum((v - mean) ** 2 for v in column) / n
            for b in range(n):
                out[b][j] = (column[b] - mean) / math.sqrt(var + 1e-5)
        return out

    a, b_ = standardised(z1), standardised(z2)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[b][i] * b_[b][j] for b in range(n)) / n
            total += (1 - c) ** 2 if i == j else lam * c**2
    return total


def vicreg_reference(
    z1: torch.Tensor, z2: torch.Tensor, lam: float, mu: float, nu: float, gamma: float
) -> float:
    n, d = z1.shape
    x, y = z1.double().tolist(), z2.double().tolist()
    invariance = sum((x[b][j] - y[b][j]) ** 2 for b in range(n) for j in range(d)) / (n * d)

    def variance(z: list[list[float]]) -> float:
        total = 0.0
        for j in range(d):
            mean = sum(z[b][j] for b in range(n)) / n
            var = sum((z[b][j] - mean) ** 2 for b in range(n)) / (n - 1)
            total += max(0.0, gamma - math.sqrt(var + 1e-4))
        return total / d

    def covariance(z: list[list[float]]) -> float:
        means = [sum(z[b][j] for b in range(n)) / n for j in range(d)]
        total = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov = sum((z[b][i] - means[i]) * (z[b][j] - means[j]) for b in range(n))
                    total += (cov / (n - 1)) ** 2
        return total / d

    return (
        lam * invariance
        + mu * (variance(x) + variance(y)) / 2
        + nu * (covariance(x) + covariance(y))
    )


@pytest.mark.parametrize("batch", [2, 5, 16])
@pytest.mark.parametrize("dim", [3, 12])
@pytest.mark.parametrize("lam", [0.0, 5e-3, 0.5])
def test_barlow_matches_reference(batch, dim, lam):
    g = torch.Generator().manual_seed(batch * 100 + dim)
    z1 = torch.randn(batch, dim, generator=g) * 3 + 1
    z2 = z1 + torch.randn(batch, dim, generator=g)
    got = BarlowTwinsLoss(lam)(z1, z2)
    assert float(got) == pytest.approx(barlow_reference(z1, z2, lam), rel=1e-4, abs=1e-6)
    assert float(BarlowTwinsLoss(lam, scale=0.1)(z1, z2)) == pytest.approx(
        0.1 * float(got), rel=1e-5, abs=1e-7
    )


def test_barlow_hand_computed_cases():
    # identical views with uncorrelated, centred columns: C = I, loss 0
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert float(BarlowTwinsLoss()(z, z.clone())) == pytest.approx(0.0, abs=1e-4)
    # anti-correlated views: C = -I, on-diagonal (1 - (-1))² per dimension
    assert float(BarlowTwinsLoss()(z, -z)) == pytest.approx(8.0, rel=1e-4)


@pytest.mark.parametrize("batch", [2, 7, 16])
@pytest.mark.parametrize("dim", [1, 4, 10])
@pytest.mark.parametrize(
    "weights", [(25.0, 25.0, 1.0, 1.0), (1.0, 0.0, 0.0, 1.0), (0.0, 2.0, 3.0, 0.5)]
)
def test_vicreg_matches_reference(batch, dim, weights):
    lam, mu, nu, gamma = weights
    g = torch.Generator().manual_seed(batch * 100 + dim)
    z1 = torch.randn(batch, dim, generator=g) * 0.7
    z2 = z1 + 0.3 * torch.randn(batch, dim, generator=g)
    got = VICRegLoss(lam, mu, nu, gamma)(z1, z2)
    assert float(got) == pytest.approx(vicreg_reference(z1, z2, lam, mu, nu, gamma), rel=1e-4)


def test_vicreg_hand_computed_cases():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # var 4/3, cov 0
    assert float(VICRegLoss()(z, z.clone())) == pytest.approx(0.0, abs=1e-6)
    # collapsed embeddings: std sqrt(1e-4) = 0.01 in every dimension, both views
    collapsed = torch.zeros(4, 3)
    assert float(VICRegLoss()(collapsed, collapsed)) == pytest.approx(25 * 0.99, rel=1e-6)
    terms = VICRegLoss().terms(z, z + 1)
    assert float(terms["invariance"]) == pytest.approx(1.0)


@pytest.mark.parametrize("loss", [BarlowTwinsLoss(), VICRegLoss()])
def test_losses_have_gradients_and_reject_bad_shapes(loss):
    z1 = torch.randn(8, 4, requires_grad=True)
    loss(z1, torch.randn(8, 4)).backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="equal shape"):
        loss(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        loss(torch.randn(1, 3), torch.randn(1, 3))


@pytest.mark.parametrize("name", ["barlow", "vicreg"])
def test_projector_scales_with_the_encoder(name):
    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=8)  # embed 64
    method = build_method(name, {}, encoder, DataInfo(1, 8))
    head = method.projector if name == "barlow" else method.expander
    assert head[-1].out_features == 4 * 64
    key = "proj_dim" if name == "barlow" else "expander_dim"
    method = build_method(name, {key: 48}, encoder, DataInfo(1, 8))
    head = method.projector if name == "barlow" else method.expander
    assert head[-1].out_features == 48


# ------------------------------------------------------------------ distributed

BATCH, DIM = 16, 12


def _model() -> nn.Module:
    torch.manual_seed(0)
    # no BatchNorm: per-process batch statistics in the model would differ by design
    return nn.Sequential(nn.Linear(DIM, 32), nn.GELU(), nn.Linear(32, 8))


def _views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(BATCH, DIM, generator=g)
    return x1, x1 + 0.5 * torch.randn(BATCH, DIM, generator=g)


def _worker(fabric: Fabric) -> dict[str, tuple[float, dict]]:
    x1, x2 = _views()
    share = BATCH // fabric.world_size
    rows = slice(fabric.global_rank * share, (fabric.global_rank + 1) * share)
    results = {}
    for name, loss_fn in [("barlow", BarlowTwinsLoss(0.05)), ("vicreg", VICRegLoss())]:
        plain = _model()
        model = fabric.setup_module(plain)
        loss = loss_fn(model(x1[rows]), model(x2[rows]))
        fabric.backward(loss)
        mean_loss = fabric.all_reduce(loss.detach(), reduce_op="mean")
        grads = {n: p.grad.detach().numpy().copy() for n, p in plain.named_parameters()}
        results[name] = (float(mean_loss), grads)
    return results


@pytest.mark.slow
def test_two_processes_give_the_loss_and_gradients_of_one_with_the_whole_batch():
    single = Fabric(accelerator="cpu", devices=1).launch(_worker)
    double = launch_two(_worker)
    for name in ("barlow", "vicreg"):
        (loss_1, grads_1), (loss_2, grads_2) = single[name], double[name]
        assert loss_2 == pytest.approx(loss_1, rel=1e-5), name
        for key in grads_1:
            torch.testing.assert_close(
                torch.from_numpy(grads_2[key]),
                torch.from_numpy(grads_1[key]),
                rtol=1e-4,
                atol=1e-6,
            )


@pytest.mark.parametrize("loss_fn", [BarlowTwinsLoss(0.05), VICRegLoss()])
def test_per_half_statistics_would_differ(loss_fn):
    """The test above can fail: statistics of each half are not those of the whole batch."""
    x1, x2 = _views()
    model = _model()
    full = loss_fn(model(x1), model(x2))
    halves = [loss_fn(model(x1[s]), model(x2[s])) for s in (slice(0, 8), slice(8, 16))]
    assert abs((sum(halves) / 2 - full).item()) > 1e-3
