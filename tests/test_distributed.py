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


def _losses_and_grads(fabric: Fabric, cases: dict) -> dict:
    """Each ``loss_fn(model)`` of ``cases`` on a fresh seed-0 model under ``fabric``: the loss
    (mean over processes) and the model's gradients (numpy: safe across processes)."""
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
    return results


def assert_same_losses_and_grads(one: dict, two: dict) -> None:
    """Every case of ``two`` (2 processes) has the loss and gradients of ``one`` (1 process)."""
    for name, expected in one.items():
        assert two[name]["loss"] == pytest.approx(expected["loss"], rel=1e-5), name
        for param, grad in expected["grads"].items():
            torch.testing.assert_close(
                torch.from_numpy(two[name]["grads"][param]),
                torch.from_numpy(grad),
                rtol=1e-4,
                atol=1e-6,
                msg=lambda m, name=name: f"{name}: {m}",
            )


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
    results = _losses_and_grads(fabric, cases)
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


# ------------------------------------------------ means over elements: shares of unequal size

SHARE = 5
"""Rows on process 0; process 1 holds the other 11 (graph nodes and masked tokens are never
split evenly)."""


def _element_mean_cases(rows: slice) -> dict:
    """GraphMAE's SCE, BGRL's loss and the masked-token cross-entropy (MLM's, CLM's) on
    ``rows`` of one fixed batch; a third of the tokens are not predicted (-100)."""
    from selfsup.losses import BGRLLoss, MaskedTokenLoss, ScaledCosineError

    g = torch.Generator().manual_seed(3)
    x = torch.randn(BATCH, DIM, generator=g)
    target = torch.randn(BATCH, 8, generator=g)
    tokens = torch.randint(0, 8, (BATCH,), generator=g)
    tokens[torch.arange(BATCH) % 3 == 0] = -100
    x, target, tokens = x[rows], target[rows], tokens[rows]
    return {
        "sce": lambda m: ScaledCosineError(2.0)(m(x), target),
        "bgrl": lambda m: BGRLLoss()(m(x), m(2 * x), target, target.flip(1)),
        "masked-ce": lambda m: MaskedTokenLoss()(m(x), tokens),
    }


def _element_means(fabric: Fabric) -> dict:
    if fabric.world_size == 1:
        rows = slice(0, BATCH)
    else:
        rows = slice(0, SHARE) if fabric.global_rank == 0 else slice(SHARE, BATCH)
    return _losses_and_grads(fabric, _element_mean_cases(rows))


@pytest.mark.slow
def test_means_over_unequal_shares_under_two_processes_match_one_process():
    """Graph nodes and predicted tokens: 2 processes holding 5 and 11 rows give the loss and
    gradients of 1 process with all 16 (each process divides by the count of all of them)."""
    one = Fabric(accelerator="cpu", devices=1).launch(_element_means)
    two = launch_two(_element_means)
    assert_same_losses_and_grads(one, two)


def test_the_mean_of_share_means_is_not_the_mean():
    """The test above can fail: averaging each share's own mean weights the 5 rows as much
    as the 11."""
    model = make_model()
    whole = {k: f(model).item() for k, f in _element_mean_cases(slice(0, BATCH)).items()}
    first = {k: f(model).item() for k, f in _element_mean_cases(slice(0, SHARE)).items()}
    rest = {k: f(model).item() for k, f in _element_mean_cases(slice(SHARE, BATCH)).items()}
    for name in whole:
        assert abs((first[name] + rest[name]) / 2 - whole[name]) > 1e-3, name


# ---------------------------------------------------------------- the speech methods' losses

FRAMES, MASKED, CODES = 10, 6, (2, 4)  # frames per utterance, masked per utterance, (G, V)


def _speech_inputs() -> dict[str, torch.Tensor]:
    """One fixed batch for the speech losses: frame inputs, each utterance's masked frames
    (the same count in every row, as span masking gives after cropping to the shortest),
    wav2vec2's distractors, HuBERT's units, data2vec's teacher layers."""
    from selfsup.losses.wav2vec2 import sample_distractors

    g = torch.Generator().manual_seed(2)
    mask = torch.zeros(BATCH, FRAMES, dtype=torch.bool)
    for row in range(BATCH):
        mask[row, torch.randperm(FRAMES, generator=g)[:MASKED]] = True
    frames = torch.randn(BATCH, FRAMES, DIM, generator=g)
    frames[BATCH // 2 :] += 5.0  # the halves use different codes: per-half averages differ
    return {
        "frames": frames,
        "mask": mask,
        "distractors": sample_distractors(BATCH, MASKED, 4, generator=g),
        "units": torch.randint(0, 5, (BATCH, FRAMES), generator=g),
        "unit_embeddings": torch.randn(5, 8, generator=g),
        "teacher": torch.randn(3, BATCH, FRAMES, 8, generator=g),
    }


def _speech_losses(fabric: Fabric, gather: bool = True) -> dict:
    """wav2vec 2.0 (contrastive + α · diversity), HuBERT and data2vec-audio on this process's
    share of one fixed batch: the loss (mean over processes) and a shared model's gradients."""
    from selfsup.losses.data2vec import Data2VecLoss, data2vec_targets
    from selfsup.losses.hubert import hubert_logits
    from selfsup.losses.wav2vec2 import Wav2Vec2ContrastiveLoss, diversity_loss

    share = BATCH // fabric.world_size
    rows = slice(fabric.global_rank * share, (fabric.global_rank + 1) * share)
    shared = ("unit_embeddings",)  # the same for every process; the rest is per utterance
    data = {
        key: value if key in shared else value[:, rows] if key == "teacher" else value[rows]
        for key, value in _speech_inputs().items()
    }
    x, mask = data["frames"], data["mask"]
    torch.manual_seed(9)
    quantize = nn.Linear(DIM, 8)  # fixed targets q of the contrastive loss
    for p in quantize.parameters():
        p.requires_grad_(False)
    batch_mean = distributed.mean_with_grad if gather else (lambda t: t)

    def wav2vec2(m: nn.Module) -> torch.Tensor:
        out = m(x[mask]).view(share, MASKED, 8)  # (B, M, 8)
        q = quantize(x[mask]).view(share, MASKED, 8)
        codes = out.flatten(0, 1).view(-1, *CODES).softmax(dim=-1).mean(dim=0)  # (G, V)
        contrastive = Wav2Vec2ContrastiveLoss(0.1)(out, q, data["distractors"])
        return contrastive + 0.1 * diversity_loss(batch_mean(codes))

    def hubert(m: nn.Module) -> torch.Tensor:
        logits = hubert_logits(m(x[mask]), data["unit_embeddings"], 0.1)
        return nn.functional.cross_entropy(logits, data["units"][mask])

    def data2vec(m: nn.Module) -> torch.Tensor:
        target = data2vec_targets(list(data["teacher"]), 2, norm="instance")
        return Data2VecLoss(beta=0.0)(m(x)[mask], target[mask])

    cases = {"wav2vec2": wav2vec2, "hubert": hubert, "data2vec-audio": data2vec}
    return _losses_and_grads(fabric, cases)


def _speech_losses_without_gathering(fabric: Fabric) -> dict:
    return _speech_losses(fabric, gather=False)


@pytest.mark.slow
def test_every_speech_loss_under_two_processes_matches_one_process():
    """wav2vec 2.0's contrastive and diversity terms, HuBERT's masked prediction and
    data2vec-audio's regression: 2 processes with half the utterances each give the loss and
    gradients of 1 process with all of them. Without averaging the code probabilities over
    processes, wav2vec 2.0's diversity term (a batch statistic) would differ: checked too."""
    one = Fabric(accelerator="cpu", devices=1).launch(_speech_losses)
    two = launch_two(_speech_losses)
    assert_same_losses_and_grads(one, two)
    local = launch_two(_speech_losses_without_gathering)
    assert abs(local["wav2vec2"]["loss"] - one["wav2vec2"]["loss"]) > 1e-3


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
