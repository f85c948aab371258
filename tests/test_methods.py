"""Every registered method: builds from its defaults, one step forward and backward, finite
loss, gradients reach the encoder, the Method protocol holds, and it learns a little."""

from __future__ import annotations

import pytest
import torch

from selfsup.encoders import build_encoder
from selfsup.methods import METHODS, DataInfo, Method, build_method


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("channels, size", [(1, 8), (3, 16)])
def test_method_step(name, channels, size):
    torch.manual_seed(0)
    encoder = build_encoder("convnet", in_channels=channels, image_size=size, width=8)
    method = build_method(name, {}, encoder, DataInfo(channels, size))
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


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_loss_falls_on_a_fixed_batch(name):
    torch.manual_seed(0)
    encoder = build_encoder("convnet", in_channels=1, image_size=8, width=8)
    method = build_method(name, {}, encoder, DataInfo(1, 8))
    opt = torch.optim.AdamW(method.parameters(), lr=3e-3)
    batch = {"image": torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)}
    losses = []
    for step in range(30):
        torch.manual_seed(step % 3)  # a few fixed view draws: the loss must be learnable
        loss = method.training_step(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.on_step_end(step / 30)
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
