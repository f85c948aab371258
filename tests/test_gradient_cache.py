"""The gradient cache gives the gradients of the whole batch while holding one micro-batch of
activations; plain accumulation gives the gradients of the batch-mean loss."""

from __future__ import annotations

import pytest
import torch
from lightning_fabric import Fabric
from spawn import launch_two
from torch import nn

from selfsup.engine.accumulate import accumulated_step, cached_step, supports_gradient_cache
from selfsup.methods import DataInfo, build_method
from selfsup.methods.simclr import SimCLR

SIZE = 8


class MLPEncoder(nn.Module):
    """No BatchNorm: batch statistics are the one thing micro-batches legitimately change."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed_dim = 16
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(SIZE * SIZE, 32),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(32, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_simclr(dropout: float = 0.0) -> SimCLR:
    torch.manual_seed(0)
    method = build_method("simclr", {}, MLPEncoder(dropout), DataInfo(1, SIZE, channels_last=False))
    method.projector = nn.Sequential(nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 8))
    return method


def grads_of(method: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in method.named_parameters() if p.grad is not None}


def images(n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (n, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)}


def whole_batch_loss(method: SimCLR, data: dict, micro: int) -> torch.Tensor:
    """The reference: the views (and dropout masks) the cache draws, micro-batch by
    micro-batch from one random stream, and then one graph over the whole batch."""
    z1, z2 = [], []
    for start in range(0, data["image"].shape[0], micro):
        x1, x2 = method.make_views({"image": data["image"][start : start + micro]})
        z1.append(method.embed(x1))
        z2.append(method.embed(x2))
    return method.contrast([torch.cat(z1), torch.cat(z2)])


@pytest.mark.parametrize("batch, micro, dropout", [(4096, 256, 0.0), (96, 40, 0.3)])
def test_cached_step_equals_the_whole_batch(batch, micro, dropout):
    data = images(batch)
    method = make_simclr(dropout)
    assert supports_gradient_cache(method)
    torch.manual_seed(5)
    full = whole_batch_loss(method, data, micro)
    full.backward()
    expected = grads_of(method)

    method = make_simclr(dropout)
    fabric = Fabric(accelerator="cpu", devices=1)
    model = fabric.setup_module(method)
    torch.manual_seed(5)
    out = cached_step(fabric, model, data, micro)
    assert out["loss"].item() == pytest.approx(full.item(), rel=1e-5)
    got = grads_of(method)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6)


def test_accumulation_is_not_the_cache_for_contrastive_losses():
    """So the test above can fail: the same views, but each micro-batch with only its own
    negatives, give other gradients."""
    data = images(512)
    method = make_simclr()
    torch.manual_seed(5)
    whole_batch_loss(method, data, 64).backward()
    expected = grads_of(method)

    method = make_simclr()
    fabric = Fabric(accelerator="cpu", devices=1)
    model = fabric.setup_module(method)
    torch.manual_seed(5)
    accumulated_step(fabric, model, data, 64)
    got = grads_of(method)
    gap = max((got[n] - expected[n]).abs().max().item() for n in expected)
    scale = max(g.abs().max().item() for g in expected.values())
    assert gap > 0.01 * scale  # 100x what the equivalence test above tolerates


def test_accumulation_equals_the_mean_loss_for_per_sample_losses():
    class Regress(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.encoder = nn.Linear(4, 3)

        def training_step(self, batch):
            loss = (self.encoder(batch["x"]) - batch["y"]).pow(2).mean()
            return {"loss": loss, "features": batch["x"]}

        def on_step_end(self, progress: float) -> None:
            pass

    g = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(50, 4, generator=g), "y": torch.randn(50, 3, generator=g)}
    plain = Regress()
    plain.training_step(batch)["loss"].backward()
    expected = grads_of(plain)

    method = Regress()
    fabric = Fabric(accelerator="cpu", devices=1)
    model = fabric.setup_module(method)
    model.mark_forward_method("training_step")
    out = accumulated_step(fabric, model, batch, 16)  # chunks of 16, 16, 16, 2
    for name in expected:
        torch.testing.assert_close(grads_of(method)[name], expected[name])
    assert out["loss"].item() == pytest.approx(plain.training_step(batch)["loss"].item(), rel=1e-5)


def _ddp_worker(fabric: Fabric) -> dict:
    data = images(64)
    share = 64 // fabric.world_size
    rows = slice(fabric.global_rank * share, (fabric.global_rank + 1) * share)
    method = make_simclr()
    model = fabric.setup_module(method)
    model.mark_forward_method("embed")
    torch.manual_seed(5 + fabric.global_rank)
    out = cached_step(fabric, model, {"image": data["image"][rows]}, 8)
    loss = fabric.all_reduce(out["loss"], reduce_op="mean")
    return {"loss": float(loss), **{n: g.numpy().copy() for n, g in grads_of(method).items()}}


@pytest.mark.slow
def test_cached_step_under_two_processes_equals_one_process_with_the_whole_batch():
    """Views are drawn per process and micro-batch, so the one-process reference makes the
    same views: it replays each process's random stream over its micro-batches."""
    two = launch_two(_ddp_worker)

    method = make_simclr()
    data = images(64)
    z1, z2 = [], []
    for rank in range(2):
        torch.manual_seed(5 + rank)
        for start in range(rank * 32, (rank + 1) * 32, 8):  # micro-batches of 8
            x1, x2 = method.make_views({"image": data["image"][start : start + 8]})
            z1.append(method.embed(x1))
            z2.append(method.embed(x2))
    loss = method.contrast([torch.cat(z1), torch.cat(z2)])
    loss.backward()
    assert two["loss"] == pytest.approx(loss.item(), rel=1e-5)
    for name, grad in grads_of(method).items():
        torch.testing.assert_close(torch.from_numpy(two[name]), grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "use_cache, expected", [(True, "cached_step"), (False, "accumulated_step")]
)
def test_the_engine_trains_in_micro_batches(tmp_path, monkeypatch, use_cache, expected):
    from selfsup.api import make_config
    from selfsup.data import load_images
    from selfsup.engine import accumulate, loop, train

    calls = []
    for name in ("cached_step", "accumulated_step"):
        real = getattr(accumulate, name)
        spy = lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k)  # noqa: E731
        monkeypatch.setattr(loop, name, spy)
    cfg = make_config(
        method="simclr",
        encoder="convnet",
        encoder_args={"width": 8},
        data="digits",
        train={
            "batch_size": 64,
            "micro_batch_size": 24,
            "gradient_cache": use_cache,
            "max_steps": 6,
            "progress": False,
        },
    )
    torch.manual_seed(0)
    from selfsup.encoders import build_encoder

    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=8)
    method = build_method("simclr", {}, encoder, DataInfo(1, 8))
    result = train(
        Fabric(accelerator="cpu", devices=1), cfg, method, load_images("digits", "train"), tmp_path
    )
    assert result.steps == 6 and calls == [expected] * 6
    assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())
