"""Two CPU processes under DDP (gloo) give the loss and the gradients of one process that
sees the whole batch: negatives are gathered across processes with gradient."""

from __future__ import annotations

import pytest
import torch
from lightning_fabric import Fabric
from torch import nn

from selfsup.losses import NTXentLoss

BATCH, DIM = 16, 12


def make_model() -> nn.Module:
    torch.manual_seed(0)
    # no BatchNorm: per-process batch statistics would differ from whole-batch ones by design
    return nn.Sequential(nn.Linear(DIM, 32), nn.GELU(), nn.Linear(32, 8))


def make_views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, DIM, generator=g), torch.randn(BATCH, DIM, generator=g)


def step(fabric: Fabric, x1: torch.Tensor, x2: torch.Tensor) -> tuple[float, dict]:
    plain = make_model()
    model = fabric.setup_module(plain)
    loss = NTXentLoss(temperature=0.3)(model(x1), model(x2))
    fabric.backward(loss)
    mean_loss = fabric.all_reduce(loss.detach(), reduce_op="mean")
    grads = {
        n: p.grad.detach().numpy().copy() for n, p in plain.named_parameters()
    }  # numpy: safe across processes
    return float(mean_loss), grads


def _worker(fabric: Fabric) -> tuple[float, dict]:
    x1, x2 = make_views()
    share = BATCH // fabric.world_size
    rows = slice(fabric.global_rank * share, (fabric.global_rank + 1) * share)
    return step(fabric, x1[rows], x2[rows])


@pytest.mark.slow
def test_two_process_ntxent_matches_one_process_with_the_whole_batch():
    single = Fabric(accelerator="cpu", devices=1)
    loss_1, grads_1 = single.launch(_worker)

    double = Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn")
    loss_2, grads_2 = double.launch(_worker)

    assert loss_2 == pytest.approx(loss_1, rel=1e-5)
    for name in grads_1:
        torch.testing.assert_close(
            torch.from_numpy(grads_2[name]), torch.from_numpy(grads_1[name]), rtol=1e-4, atol=1e-6
        )


def test_without_gathering_the_losses_differ():
    """The test above can fail: a loss that sees only local negatives is a different loss."""
    x1, x2 = make_views()
    model = make_model()
    full = NTXentLoss(0.3)(model(x1), model(x2))
    halves = [NTXentLoss(0.3)(model(x1[s]), model(x2[s])) for s in (slice(0, 8), slice(8, 16))]
    assert abs((sum(halves) / 2 - full).item()) > 1e-3
