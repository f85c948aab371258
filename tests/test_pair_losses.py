"""The image–text losses against slow references written from the papers' formulas, and their
distributed forms (2 processes) against one process holding the whole batch."""

from __future__ import annotations

import math

import pytest
import torch
from lightning_fabric import Fabric
from spawn import launch_two
from torch import nn

from selfsup.losses.clip import ALIGNLoss, CLIPLoss
from selfsup.losses.siglip import SigLIPLoss


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / math.sqrt(float((v * v).sum()))


def reference_softmax(x, y, scale: float, smoothing: float = 0.0) -> float:
    """½ (mean_i CE over texts + mean_i CE over images), label smoothing ε spread over all
    B classes: target 1 - ε + ε/B on the pair, ε/B elsewhere."""
    B = len(x)
    xs, ys = [_unit(v) for v in x], [_unit(v) for v in y]
    total = 0.0
    for a, b in ((xs, ys), (ys, xs)):
        for i in range(B):
            logits = [scale * float(a[i] @ b[j]) for j in range(B)]
            log_z = math.log(sum(math.exp(v) for v in logits))
            for j in range(B):
                target = (1 - smoothing) * (i == j) + smoothing / B
                total -= target * (logits[j] - log_z) / B
    return total / 2


def reference_sigmoid(x, y, t: float, b: float) -> float:
    """-1/B Σ_i Σ_j log σ(z_ij (t x_i·y_j + b)), z = +1 on pairs, -1 elsewhere."""
    B = len(x)
    total = 0.0
    for i in range(B):
        for j in range(B):
            z = 1.0 if i == j else -1.0
            logit = t * float(_unit(x[i]) @ _unit(y[j])) + b
            total -= math.log(1 / (1 + math.exp(-z * logit)))
    return total / B


def _pairs(B: int, D: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g, dtype=torch.float64), torch.randn(
        B, D, generator=g, dtype=torch.float64
    )


@pytest.mark.parametrize("B, D", [(1, 3), (5, 4), (12, 16)])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_clip_loss_matches_the_reference(B, D, temperature):
    x, y = _pairs(B, D)
    loss = CLIPLoss(init_temperature=temperature)
    assert float(loss.scale().detach()) == pytest.approx(1 / temperature)
    assert float(loss(x, y)) == pytest.approx(reference_softmax(x, y, 1 / temperature), rel=1e-5)


def test_clip_scale_starts_at_one_over_0_07_and_is_clamped_at_100():
    loss = CLIPLoss()
    assert float(loss.log_scale) == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        loss.log_scale.fill_(math.log(1000))
    assert float(loss.scale()) == pytest.approx(100)
    x, y = _pairs(6, 8)
    assert float(loss(x, y)) == pytest.approx(reference_softmax(x, y, 100.0), rel=1e-5)


@pytest.mark.parametrize("B, D", [(2, 3), (7, 8)])
@pytest.mark.parametrize("temperature, smoothing", [(1.0, 0.1), (0.3, 0.0), (0.05, 0.2)])
def test_align_loss_matches_the_reference(B, D, temperature, smoothing):
    x, y = _pairs(B, D, seed=1)
    loss = ALIGNLoss(init_temperature=temperature, label_smoothing=smoothing)
    expected = reference_softmax(x, y, 1 / temperature, smoothing)
    assert float(loss(x, y)) == pytest.approx(expected, rel=1e-5)


def test_align_defaults_are_the_papers():
    loss = ALIGNLoss()
    assert float(loss.scale()) == pytest.approx(1.0) and loss.label_smoothing == 0.1


@pytest.mark.parametrize("B, D", [(1, 2), (6, 5), (10, 16)])
@pytest.mark.parametrize("log_t, bias", [(math.log(10), -10.0), (0.0, 0.0), (2.0, -3.0)])
def test_siglip_loss_matches_the_reference(B, D, log_t, bias):
    x, y = _pairs(B, D, seed=2)
    loss = SigLIPLoss(init_log_temperature=log_t, init_bias=bias)
    expected = reference_sigmoid(x, y, math.exp(log_t), bias)
    assert float(loss(x, y)) == pytest.approx(expected, rel=1e-5)


def test_siglip_defaults_are_the_papers():
    loss = SigLIPLoss()
    assert float(loss.scale()) == pytest.approx(10.0) and float(loss.bias) == -10.0


def test_the_learnable_scales_get_gradients():
    x, y = _pairs(6, 4)
    for loss in (CLIPLoss(), ALIGNLoss(), SigLIPLoss()):
        loss(x.float(), y.float()).backward()
        grads = [p.grad for p in loss.parameters()]
        assert grads and all(g is not None and g.abs() > 0 for g in grads), type(loss).__name__


# ------------------------------------------------------------ two processes equal one

BATCH, DIM = 8, 6
LOSSES = {"clip": CLIPLoss, "align": ALIGNLoss, "siglip": SigLIPLoss}


class _Towers(nn.Module):
    """Two linear towers and a pair loss; called through the DDP wrapper, which syncs grads."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image, self.text, self.loss = nn.Linear(DIM, 5), nn.Linear(DIM + 1, 5), loss

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        return self.loss(self.image(images), self.text(texts))  # type: ignore[no-any-return]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(BATCH, DIM, generator=g), torch.randn(BATCH, DIM + 1, generator=g)


def _worker(fabric: Fabric) -> dict[str, tuple[float, dict]]:
    images, texts = _batch()
    share = BATCH // fabric.world_size
    rows = slice(fabric.global_rank * share, (fabric.global_rank + 1) * share)
    out = {}
    for name, make in LOSSES.items():
        plain = _Towers(make())
        model = fabric.setup_module(plain)
        loss = model(images[rows], texts[rows])
        fabric.backward(loss)
        mean = fabric.all_reduce(loss.detach(), reduce_op="mean")
        grads = {n: p.grad.detach().numpy().copy() for n, p in plain.named_parameters()}
        out[name] = (float(mean), grads)
    return out


@pytest.mark.slow
def test_two_processes_give_the_loss_and_gradients_of_one():
    """CLIP and ALIGN gather with gradient; SigLIP passes text features around the ring."""
    single = Fabric(accelerator="cpu", devices=1).launch(_worker)
    double = launch_two(_worker)
    for name in LOSSES:
        loss_1, grads_1 = single[name]
        loss_2, grads_2 = double[name]
        assert loss_2 == pytest.approx(loss_1, rel=1e-5), name
        for key in grads_1:
            torch.testing.assert_close(
                torch.from_numpy(grads_2[key]),
                torch.from_numpy(grads_1[key]),
                rtol=1e-4,
                atol=1e-6,
                msg=f"{name}: {key}",
            )


def test_local_losses_differ_from_the_whole_batch():
    """The test above can fail: each loss on half the batch is not the whole batch's loss."""
    images, texts = _batch()
    for make in LOSSES.values():
        model = _Towers(make())
        full = model(images, texts)
        halves = [model(images[s], texts[s]) for s in (slice(0, 4), slice(4, 8))]
        assert abs(float(sum(halves) / 2 - full)) > 1e-3
