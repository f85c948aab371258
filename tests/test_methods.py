"""Every registered method: builds from its defaults, one step forward and backward, finite
loss, gradients reach the encoder, the Method protocol holds, and it learns a little."""

from __future__ import annotations

import pytest
import torch

from selfsup.encoders import build_encoder
from selfsup.errors import SelfsupError
from selfsup.methods import METHODS, DataInfo, Method, build_method, encoder_channels


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("channels, size", [(1, 8), (3, 16)])
def test_method_step(name, channels, size):
    torch.manual_seed(0)
    info = DataInfo(channels, size)
    if METHODS[name].needs_color and channels == 1:
        encoder = build_encoder("convnet", in_channels=1, image_size=size, width=8)
        with pytest.raises(SelfsupError, match="colour"):
            build_method(name, {}, encoder, info)
        return
    in_channels = encoder_channels(name, info)  # what the API builds: colorization takes 1
    encoder = build_encoder("convnet", in_channels=in_channels, image_size=size, width=8)
    method = build_method(name, {}, encoder, info)
    assert isinstance(method, Method) and method.encoder is encoder
    batch = {"image": torch.randint(0, 256, (16, channels, size, size), dtype=torch.uint8)}
    out = method.training_step(batch)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert out["features"].shape == (16, encoder.embed_dim) and not out["features"].requires_grad
    out["loss"].backward()
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    method.on_step_end(0.5)


# On one fixed batch two methods need a word. DINO's loss is the teacher's entropy (no
# gradient reaches it; it climbs while the center catches up) plus the KL from teacher to
# student that training lowers: the test watches that KL. MoCo v2's loss rises by design in
# a short run (its queue fills with real keys, which are harder negatives than the random
# keys it starts with, and with the batch's own keys): 30 steps on noise show too little
# (0.92 of the lr-0 loss with a queue of 64 and momentum 0.9). Its learning is shown on real
# data instead: its Fashion-MNIST row in docs/benchmarks.md.
SIGNAL = {"dino": lambda out: out["loss"] - out["teacher_entropy"]}
NOT_ON_A_FIXED_BATCH = {"mocov2"}


def _losses_on_a_fixed_batch(name: str, lr: float, steps: int = 30) -> list[float]:
    torch.manual_seed(0)
    channels = 3 if METHODS[name].needs_color else 1
    info = DataInfo(channels, 8)
    encoder = build_encoder(
        "convnet", in_channels=encoder_channels(name, info), image_size=8, width=8
    )
    method = build_method(name, {}, encoder, info)
    opt = torch.optim.AdamW(method.parameters(), lr=lr, weight_decay=0.0)
    signal = SIGNAL.get(name, lambda out: out["loss"])
    batch = {"image": torch.randint(0, 256, (32, channels, 8, 8), dtype=torch.uint8)}
    losses = []
    for step in range(steps):
        torch.manual_seed(step % 3)  # a few fixed view draws: the loss must be learnable
        out = method.training_step(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.on_step_end(step / steps)
        losses.append(float(signal(out).detach()))
    return losses


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_learns_on_a_fixed_batch(name):
    """Training must end clearly below the same run at lr 0. The control matters: a method's
    loss can rise with no learning at all (MoCo's queue fills with the batch's own keys,
    DINO's center catches up with the teacher), so "the loss falls" alone is the wrong test."""
    if name in NOT_ON_A_FIXED_BATCH:
        pytest.skip("see NOT_ON_A_FIXED_BATCH")
    trained = _losses_on_a_fixed_batch(name, lr=3e-3)
    control = _losses_on_a_fixed_batch(name, lr=0.0)
    assert sum(trained[-5:]) / 5 < 0.9 * sum(control[-5:]) / 5, (trained[-5:], control[-5:])
