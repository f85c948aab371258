"""Every registered method trains under 2-process DDP on CPU (gloo) through the real engine:
finite losses, the encoder moves, and both processes hold the same weights afterwards.

One spawn runs every method in turn, so the cost of starting processes is paid once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning_fabric import Fabric

from selfsup.api import make_config
from selfsup.data.images import TensorImageDataset
from selfsup.encoders import build_encoder
from selfsup.engine import train
from selfsup.methods import METHODS, DataInfo, build_method, encoder_channels

STEPS, BATCH, SIZE = 2, 16, 16


def _dataset() -> TensorImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4 * BATCH, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return TensorImageDataset(images, None, name="random", split="train")


def _encoder_vector(method: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in method.encoder.parameters()])


def _worker(fabric: Fabric, root: str) -> dict[str, dict[str, float]]:
    results = {}
    for name in sorted(METHODS):
        cfg = make_config(
            method=name,
            encoder="convnet",
            encoder_args={"width": 8},
            data="random",
            train={
                "batch_size": BATCH,
                "max_steps": STEPS,
                "checkpoint_every": 1000,
                "progress": False,
                "channels_last": False,
            },
        )
        torch.manual_seed(0)
        info = DataInfo(3, SIZE, channels_last=False)
        channels = encoder_channels(name, info)  # as the API builds it: colorization takes 1
        encoder = build_encoder("convnet", in_channels=channels, image_size=SIZE, width=8)
        method = build_method(name, {}, encoder, info)
        before = _encoder_vector(method)
        result = train(fabric, cfg, method, _dataset(), Path(root) / name)
        after = _encoder_vector(method)
        gathered = fabric.all_gather(after)  # (P, n)
        results[name] = {
            "steps": float(result.steps),
            "finite": float(all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())),
            "moved": float((after - before).abs().max()),
            "rank_gap": float((gathered - gathered[0]).abs().max()),
        }
    return results


@pytest.mark.slow
def test_every_method_trains_under_two_process_ddp(tmp_path):
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn")
    results = fabric.launch(_worker, str(tmp_path))
    assert sorted(results) == sorted(METHODS)
    for name, r in results.items():
        assert r["steps"] == STEPS, name
        assert r["finite"] == 1.0, name
        assert r["moved"] > 0, f"{name}: the encoder did not change"
        assert r["rank_gap"] < 1e-6, f"{name}: processes disagree on the weights ({r['rank_gap']})"
