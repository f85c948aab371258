"""The engine: exact resume, the NaN guard, atomic checkpoints, the schedule and LARS."""

from __future__ import annotations

import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_clock import one_second_steps
from lightning_fabric import Fabric
from torch import nn

from selfsup.api import make_config
from selfsup.data import load_images
from selfsup.encoders import build_encoder
from selfsup.engine import TrainingDiverged, train
from selfsup.engine.checkpoint import latest_checkpoint, load
from selfsup.engine.optim import LARS, cosine_lr
from selfsup.engine.sampler import ResumableSampler
from selfsup.errors import SelfsupError
from selfsup.methods import DataInfo, build_method


class Interrupt(Exception):
    pass


def tiny_run(tmp: Path, **train):
    cfg = make_config(
        method="simclr",
        encoder="convnet",
        encoder_args={"width": 8},
        data="digits",
        train={
            "batch_size": 64,
            "max_steps": 12,
            "checkpoint_every": 4,
            "log_every": 2,
            "progress": False,
            **train,
        },
        out=str(tmp),
    )
    dataset = load_images("digits", "train")
    torch.manual_seed(cfg.train.seed)
    encoder = build_encoder(cfg.encoder, in_channels=1, image_size=8, **cfg.encoder_args)
    method = build_method(cfg.method, cfg.method_args, encoder, DataInfo(1, 8))
    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    return cfg, fabric, method, dataset


def test_interrupted_run_resumes_with_identical_losses(tmp_path):
    cfg, fabric, method, data = tiny_run(tmp_path / "a")
    full = train(fabric, cfg, method, data, tmp_path / "a")
    assert full.steps == 12 and len(full.losses) == 12

    cfg, fabric, method, data = tiny_run(tmp_path / "b")

    def crash(step: int, loss: float) -> None:
        if step == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(fabric, cfg, method, data, tmp_path / "b", on_step=crash)
    ckpt = latest_checkpoint(tmp_path / "b")
    assert ckpt is not None and ckpt.name == "step-000004.ckpt"

    # a fresh process would rebuild everything from the config: do the same
    cfg, fabric, method, data = tiny_run(tmp_path / "b")
    torch.manual_seed(1234)  # the resumed RNG must come from the checkpoint, not from here
    resumed = train(fabric, cfg, method, data, tmp_path / "b", resume_from=ckpt)
    assert resumed.start_step == 4 and resumed.steps == 12
    for step in range(5, 13):
        assert resumed.losses[step] == full.losses[step], f"step {step}"


def test_nan_loss_stops_naming_the_step_and_keeps_last_checkpoint(tmp_path):
    cfg, fabric, method, data = tiny_run(tmp_path, checkpoint_every=2)
    real_step = method.training_step

    def poisoned(self, batch):
        out = real_step(batch)
        if poisoned.calls == 4:  # the 5th step
            out["loss"] = out["loss"] * float("nan")
        poisoned.calls += 1
        return out

    poisoned.calls = 0
    method.training_step = types.MethodType(poisoned, method)
    with pytest.raises(
        TrainingDiverged, match=r"at step 5; the last good checkpoint is .*step-000004\.ckpt"
    ):
        train(fabric, cfg, method, data, tmp_path)
    assert latest_checkpoint(tmp_path).name == "step-000004.ckpt"


def test_nan_loss_can_skip_the_step(tmp_path):
    cfg, fabric, method, data = tiny_run(tmp_path, on_nan="skip", max_steps=4)
    real_step = method.training_step
    calls = []

    def poisoned(self, batch):
        out = real_step(batch)
        calls.append(1)
        if len(calls) == 2:
            out["loss"] = out["loss"] * float("inf")
        return out

    method.training_step = types.MethodType(poisoned, method)
    before = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    result = train(fabric, cfg, method, data, tmp_path)
    assert (
        result.steps == 4
        and 2 not in result.losses
        and all(math.isfinite(v) for v in result.losses.values())
    )
    assert any(not torch.equal(before[k], v) for k, v in method.encoder.state_dict().items())


def test_checkpoint_is_atomic_and_corrupt_file_is_named(tmp_path):
    cfg, fabric, method, data = tiny_run(tmp_path, max_steps=8)
    train(fabric, cfg, method, data, tmp_path)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["step-000004.ckpt", "step-000008.ckpt"]
    assert not list(folder.glob("*.tmp"))
    # a half-written newer file (as a crash mid-write leaves) does not replace the pointer
    (folder / "step-000012.ckpt.tmp").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path).name == "step-000008.ckpt"
    bad = folder / "step-000008.ckpt"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(SelfsupError, match="step-000008.ckpt is unreadable"):
        load(fabric, bad, {"method": method})


def test_checkpoint_loads_with_weights_only(tmp_path):
    cfg, fabric, method, data = tiny_run(tmp_path, max_steps=4)
    train(fabric, cfg, method, data, tmp_path)
    state = torch.load(latest_checkpoint(tmp_path), weights_only=True)
    assert state["step"] == 4 and "method" in state and "optimizer" in state


def test_sampler_splits_processes_without_duplicates_and_resumes_mid_epoch():
    samplers = [ResumableSampler(103, 10, seed=3, rank=r, world=2) for r in range(2)]
    for s in samplers:
        s.set_position(epoch=1, batch_in_epoch=0)
    a, b = (list(s) for s in samplers)
    assert len(a) == len(b) == 50 and not set(a) & set(b)
    samplers[0].set_position(epoch=1, batch_in_epoch=2)
    assert list(samplers[0]) == a[20:]
    samplers[0].set_position(epoch=2, batch_in_epoch=0)
    assert list(samplers[0]) != a


def test_sampler_groups_lengths_per_step_across_processes_and_resumes():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 1000, (1003,), generator=g).numpy()
    batch, world = 8, 2
    samplers = [
        ResumableSampler(1003, batch, seed=5, rank=r, world=world, lengths=lengths)
        for r in range(world)
    ]
    for s in samplers:
        s.set_position(epoch=1, batch_in_epoch=0)
    a, b = (torch.tensor(list(s)).view(-1, batch) for s in samplers)
    assert a.shape == b.shape == (62, batch)  # 1003 // 2 // 8 steps, every index at most once
    both = torch.cat([a, b], dim=1)  # (steps, global batch)
    assert len(set(both.flatten().tolist())) == both.numel()
    # a step's global batch spans a narrow range of lengths; uniform batches span most of it
    spread = lambda rows: float(np.mean([np.ptp(lengths[r]) for r in rows.numpy()]))  # noqa: E731
    uniform = torch.tensor(list(ResumableSampler(1003, 16, seed=5))).view(-1, 16)
    assert spread(both) < 0.15 * spread(uniform), (spread(both), spread(uniform))
    # the batches are shuffled, not served shortest first
    firsts = lengths[both[:, 0].numpy()]
    assert not np.all(np.diff(firsts[: ResumableSampler.LENGTH_WINDOW]) >= 0)
    samplers[1].set_position(epoch=1, batch_in_epoch=7)
    assert torch.equal(torch.tensor(list(samplers[1])).view(-1, batch), b[7:])
    samplers[1].set_position(epoch=2, batch_in_epoch=0)
    assert not torch.equal(torch.tensor(list(samplers[1])).view(-1, batch), b)


def test_cosine_schedule_warms_up_then_decays():
    lrs = [cosine_lr(s, 100, 1.0, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_lars_applies_the_trust_ratio():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # ‖w‖ = 5
    w.grad = torch.tensor([0.0, 10.0])  # ‖g‖ = 10
    opt = LARS(
        [{"params": [w], "weight_decay": 0.0, "lars_exclude": False}], lr=1.0, momentum=0.0, eta=0.1
    )
    opt.step()
    # update = lr · η‖w‖/‖g‖ · g = 1 · 0.1 · 0.5 · g
    assert torch.allclose(w.detach(), torch.tensor([3.0, 3.5]))
    b = nn.Parameter(torch.tensor([1.0]))
    b.grad = torch.tensor([2.0])
    LARS([{"params": [b], "weight_decay": 0.0, "lars_exclude": True}], lr=0.5, momentum=0.0).step()
    assert torch.allclose(b.detach(), torch.tensor([0.0]))


@pytest.mark.parametrize(
    "train_args",
    [{}, {"micro_batch_size": 32}, {"micro_batch_size": 32, "gradient_cache": False}],
    ids=["whole", "gradient-cache", "accumulated"],
)
def test_bf16_mixed_steps_run_under_autocast_on_one_device(tmp_path, train_args):
    """Fabric autocasts a marked method (``training_step``, ``embed``) only where DDP or FSDP
    wraps the module: on one device the engine enters the precision's autocast itself."""
    cfg, _, method, data = tiny_run(tmp_path, max_steps=1, precision="bf16-mixed", **train_args)
    fabric = Fabric(accelerator="cpu", devices=1, precision="bf16-mixed")
    seen = []
    forward = method.encoder.forward

    def recording(x):
        seen.append(torch.is_autocast_enabled("cpu"))
        return forward(x)

    method.encoder.forward = recording
    train(fabric, cfg, method, data, tmp_path)
    assert seen and all(seen)


def test_a_run_without_a_folder_writes_nothing_and_fits_a_step_limit_to_its_time(
    tmp_path, monkeypatch
):
    """``run_dir=None`` (fine-tuning) saves no checkpoint; with both a step limit and a time
    limit the cosine schedule ends with whichever comes first (here the time: each step of
    the fake clock takes 1 s, so 30 s fit about 30 of the 1,000 steps)."""
    cfg, fabric, method, data = tiny_run(tmp_path, max_steps=1000, max_time=30)
    seen = one_second_steps(monkeypatch)
    monkeypatch.chdir(tmp_path)
    result = train(fabric, cfg, method, data, None)
    assert result.stopped_by == "max_time" and 25 <= result.steps <= 30
    assert seen[-1] == (result.steps - 1, result.steps)  # the lr reached 0 at the last step
    assert not any(tmp_path.iterdir())
    with pytest.raises(SelfsupError, match="no checkpoints"):
        train(fabric, cfg, method, data, None, resume_from=tmp_path / "step-000001.ckpt")
