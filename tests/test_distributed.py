"""Two CPU processes under DDP (gloo) give the loss and the gradients of one process that
sees the whole batch: negatives are gathered across processes with gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning_fabric import Fabric
from spawn import launch_two
from torch import nn

from selfsup import distributed
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

    loss_2, grads_2 = launch_two(_worker)

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


# ---------------------------------------------------------------- every loss that couples a batch


def _queue_state(queue) -> dict:
    return {"keys": queue.keys.numpy().copy(), "ptr": int(queue.ptr)}


def _coupled_losses(fabric: Fabric) -> dict:
    """Each loss on this process's share of one fixed batch: its value (mean over processes),
    the gradients of a shared model, and the state it updates (DINO's center, MoCo's queue)."""
    from selfsup.losses import (
        BarlowTwinsLoss,
        DINOLoss,
        InfoNCELoss,
        KeyQueue,
        MoCoV3Loss,
        VICRegLoss,
    )

    x1, x2 = make_views()
    share = BATCH // fabric.world_size
    rows = slice(fabric.global_rank * share, (fabric.global_rank + 1) * share)
    x1, x2 = x1[rows], x2[rows]
    torch.manual_seed(7)
    key_model = nn.Sequential(nn.Linear(DIM, 8))
    for p in key_model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(8)
    queue = KeyQueue(40, 8)
    dino = DINOLoss(out_dim=8)
    cases = {
        "ntxent": lambda m: NTXentLoss(0.3)(m(x1), m(x2)),
        "barlow": lambda m: BarlowTwinsLoss()(m(x1), m(x2)),
        "vicreg": lambda m: VICRegLoss()(m(x1), m(x2)),
        "mocov3": lambda m: MoCoV3Loss(0.2)(m(x1), m(x2), key_model(x1), key_model(x2)),
        "moco-queue": lambda m: InfoNCELoss(0.2)(m(x1), key_model(x2), queue.keys.clone()),
        "dino": lambda m: dino(
            torch.stack([m(x1), m(x2)]), torch.stack([key_model(x1), key_model(x2)]), 0.04
        ),
    }
    results = {}
    for name, loss_fn in cases.items():
        plain = make_model()
        model = fabric.setup_module(plain)
        loss = loss_fn(model)
        fabric.backward(loss)
        results[name] = {
            "loss": float(fabric.all_reduce(loss.detach(), reduce_op="mean")),
            "grads": {n: p.grad.numpy().copy() for n, p in plain.named_parameters()},
        }
    queue.push(key_model(x2))
    results["moco-queue"]["state"] = _queue_state(queue)
    results["dino"]["state"] = {"center": dino.center.numpy().copy()}
    return results


@pytest.mark.slow
def test_every_batch_coupled_loss_under_two_processes_matches_one_process():
    """NT-Xent, Barlow Twins, VICReg, MoCo v3, MoCo's queue and DINO's centering: 2 processes
    with half the batch each give the loss, gradients and state of 1 process with all of it."""
    one = Fabric(accelerator="cpu", devices=1).launch(_coupled_losses)
    two = launch_two(_coupled_losses)
    for name, expected in one.items():
        got = two[name]
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5), name
        for param, grad in expected["grads"].items():
            torch.testing.assert_close(
                torch.from_numpy(got["grads"][param]),
                torch.from_numpy(grad),
                rtol=1e-4,
                atol=1e-6,
                msg=lambda m, name=name: f"{name}: {m}",
            )
        for key, value in expected.get("state", {}).items():
            np.testing.assert_allclose(got["state"][key], value, rtol=1e-5, atol=1e-7, err_msg=name)


def _threads(fabric: Fabric) -> tuple[int, int]:
    from selfsup.engine.loop import cpu_threads_per_process

    return distributed.processes_on_this_machine(), cpu_threads_per_process()


@pytest.mark.slow
def test_processes_divide_the_cores_of_the_machine_they_share():
    """The thread count comes from the processes counted on this machine, so any launch of two
    processes here (one node, or two torchrun "nodes" on the loopback) computes alike."""
    assert distributed.processes_on_this_machine() == 1  # one process: no group
    processes, threads = launch_two(_threads)
    assert processes == 2
    assert threads == max(1, distributed.usable_cores() // 2)
