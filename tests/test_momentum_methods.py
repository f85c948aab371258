"""MoCo v2 / v3, BYOL and SimSiam: teachers frozen, every trainable parameter used (DDP
needs no unused parameters), state in buffers, and ViT encoders. Their presets are tested
with all the others in test_presets.py."""

from __future__ import annotations

import pytest
import torch

from selfsup.encoders import build_encoder
from selfsup.methods import METHODS, DataInfo, build_method

OURS = ["mocov2", "mocov3", "byol", "simsiam"]


def batch(n: int = 16, size: int = 8) -> dict[str, torch.Tensor]:
    return {"image": torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8)}


def make(name: str, args: dict | None = None, encoder: str = "convnet", **enc_args):
    torch.manual_seed(0)
    enc_args = enc_args or {"width": 8}
    encoder_module = build_encoder(encoder, in_channels=1, image_size=8, **enc_args)
    return build_method(name, args or {}, encoder_module, DataInfo(1, 8, channels_last=False))


@pytest.mark.parametrize("name", OURS)
def test_registered_with_a_paper(name):
    assert "arXiv:" in METHODS[name].paper and METHODS[name].description


@pytest.mark.parametrize("name", OURS)
def test_every_trainable_parameter_gets_a_gradient_and_teachers_are_frozen(name):
    method = make(name)
    out = method.training_step(batch())
    out["loss"].backward()
    for pname, p in method.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{pname} is unused: DDP would fail"
        else:
            assert pname.split(".")[0].startswith(("key_", "momentum_", "target_")), pname
    frozen = [n for n, p in method.named_parameters() if not p.requires_grad]
    assert bool(frozen) == (name != "simsiam")
    assert out["embedding"].ndim == 2 and not out["embedding"].requires_grad


@pytest.mark.parametrize("name", ["mocov2", "mocov3", "byol"])
def test_on_step_end_moves_the_teacher_toward_the_student(name):
    method = make(name)
    teacher = {
        "mocov2": "key_encoder",
        "mocov3": "momentum_encoder",
        "byol": "target_encoder",
    }[name]
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in getattr(method, teacher).parameters()]
    method.on_step_end(0.0)
    after = list(getattr(method, teacher).parameters())
    moved = [float((a - b).abs().mean()) for a, b in zip(after, before)]
    assert all(0.001 < m < 0.02 for m in moved)  # 1 - m of the way: m = 0.99 or 0.996
    before = [p.clone() for p in after]
    method.on_step_end(1.0)  # momentum 1 at the end of the cosine schedule
    if name != "mocov2":
        assert all(torch.equal(a, b) for a, b in zip(after, before))


def test_mocov2_queue_and_pointer_are_checkpointed_and_keys_use_running_statistics():
    method = make("mocov2", {"queue_size": 40})
    state = method.state_dict()
    assert "queue.keys" in state and "queue.ptr" in state
    key_stats = method.key_encoder.state_dict()
    method.train()
    method.training_step(batch(16))
    assert int(method.queue.ptr) == 16
    # the key encoder ran with BatchNorm in eval mode: its running statistics did not move
    for k, v in method.key_encoder.state_dict().items():
        assert torch.equal(v, key_stats[k]), k
    method.training_step(batch(16))
    method.training_step(batch(16))
    assert int(method.queue.ptr) == 8  # 48 keys in a queue of 40: wrapped


def test_mocov2_symmetric_queues_both_views():
    method = make("mocov2", {"queue_size": 64, "symmetric": True})
    out = method.training_step(batch(8))
    assert torch.isfinite(out["loss"]) and int(method.queue.ptr) == 16


def test_mocov3_trains_a_vit():
    method = make("mocov3", {}, "vit-tiny", depth=2, patch_size=2)
    out = method.training_step(batch(8))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["features"].shape == (8, 192)
    assert all(p.grad is not None for p in method.encoder.parameters())
    method.on_step_end(0.1)


def test_simsiam_stop_gradient_flag():
    method = make("simsiam", {"stop_gradient": False})
    assert method.cfg.stop_gradient is False
    out = method.training_step(batch())
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
