"""Every registered method trains under 2-process FSDP on CPU (gloo) through the real engine,
and sharding changes nothing of the arithmetic: the losses and the trained encoder are those
of 2-process DDP from the same start. Also: the export of an FSDP run holds whole tensors,
and FSDP refuses the gradient cache with one line.

The two processes are started the way torchrun starts them (its environment variables), so
Fabric joins them instead of launching its own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from lightning_fabric import Fabric
from method_setups import cases
from test_methods_ddp import STEPS, run_config, seeded_method
from test_multinode import losses
from torch.distributed.tensor import DTensor

from selfsup.api import load_encoder
from selfsup.encoders import build_encoder
from selfsup.engine import train
from selfsup.engine.checkpoint import checkpoint_path
from selfsup.engine.sharding import CACHE_REFUSED, fsdp_strategy, full_state_dict, is_sharded
from selfsup.errors import SelfsupError

PROCESSES = 2

DISTRIBUTED = ("image", "text")
"""Modalities whose methods run here; audio (wav2vec2) has no multi-process test yet (issue 16)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(fabric: Fabric, name: str, modality: str, strategy: str, root: Path):
    method, dataset = seeded_method(name, modality)
    cfg = run_config(name, modality, strategy=strategy, devices=PROCESSES)
    result = train(fabric, cfg, method, dataset, root / f"{name}-{modality}-{strategy}")
    sharded = is_sharded(method.encoder)
    encoder = full_state_dict(method.encoder)  # whole tensors, whatever the strategy
    return result.losses, encoder, sharded


def _process(rank: int, port: int, root: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        GROUP_RANK="0",
        WORLD_SIZE=str(PROCESSES),
        LOCAL_WORLD_SIZE=str(PROCESSES),
        TORCHELASTIC_RUN_ID="selfsup-test",
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    out = Path(root)
    ddp = Fabric(accelerator="cpu", devices=PROCESSES, strategy="ddp")
    fsdp = Fabric(accelerator="cpu", devices=PROCESSES, strategy=fsdp_strategy(PROCESSES))
    ddp.launch()
    fsdp.launch()
    results = {}
    for name, modality in cases(DISTRIBUTED):
        losses_ddp, encoder_ddp, _ = _run(ddp, name, modality, "ddp", out)
        losses_fsdp, encoder_fsdp, sharded = _run(fsdp, name, modality, "fsdp", out)
        weight_gap = max(
            float((encoder_ddp[k].float() - encoder_fsdp[k].float()).abs().max())
            for k in encoder_ddp
        )
        loss_gap = max(abs(losses_ddp[s] - losses_fsdp[s]) for s in losses_ddp)
        results[f"{name}-{modality}"] = {
            "steps": sorted(losses_fsdp) == list(range(1, STEPS + 1)),
            "sharded": sharded,
            "loss_gap": loss_gap,
            "weight_gap": weight_gap,
            "scale": max(float(v.float().abs().max()) for v in encoder_ddp.values()),
        }
    try:
        cfg = run_config("simclr", "image", strategy="fsdp", devices=PROCESSES, micro_batch_size=4)
        train(fsdp, cfg, *seeded_method("simclr", "image"), out / "cache")
        results["cache_refused"] = ""
    except SelfsupError as error:
        results["cache_refused"] = str(error)
    (out / f"results-{rank}.json").write_text(json.dumps(results))


@pytest.mark.slow
def test_every_method_trains_under_fsdp_exactly_as_under_ddp(tmp_path):
    mp.start_processes(
        _process, args=(_free_port(), str(tmp_path)), nprocs=PROCESSES, start_method="spawn"
    )
    results = json.loads((tmp_path / "results-0.json").read_text())
    refused = results.pop("cache_refused")
    assert refused == CACHE_REFUSED
    assert sorted(results) == sorted(f"{n}-{m}" for n, m in cases(DISTRIBUTED))
    for name, r in results.items():
        assert r["steps"], name
        assert r["sharded"], f"{name}: FSDP left the encoder's parameters whole"
        assert r["loss_gap"] < 1e-4, f"{name}: FSDP and DDP losses differ by {r['loss_gap']}"
        assert r["weight_gap"] < 1e-4 * max(1.0, r["scale"]), (
            f"{name}: FSDP and DDP weights differ by {r['weight_gap']}"
        )


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "selfsup", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_fsdp_run_from_the_command_line_exports_whole_weights_and_resumes_exactly(tmp_path):
    args = [
        "pretrain", "--data", "digits", "--batch-size", "32", "--max-steps", "4", "--no-eval",
        "--strategy", "fsdp", "--devices", "2", "--set", "train.accelerator=cpu",
        "--set", "encoder_args.width=8", "--set", "train.log_every=1",
        "--set", "train.progress=false", "--set", "train.checkpoint_every=2",
    ]  # fmt: skip
    whole = _cli(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stdout + whole.stderr
    encoder = load_encoder(tmp_path / "whole")
    reference = build_encoder("convnet", in_channels=1, image_size=8, width=8)
    for name, tensor in reference.state_dict().items():  # whole tensors, the model's shapes
        assert encoder.state_dict()[name].shape == tensor.shape, name
    assert all(not isinstance(p, DTensor) for p in encoder.parameters())

    # resume: the run folder as it was at step 2, then continued to step 4
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "whole", cut)
    checkpoint_path(cut, 4).unlink()  # the pointer then names no file: step 2 is the latest
    resumed = _cli("pretrain", "--resume", str(cut))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert losses(cut) == pytest.approx(losses(tmp_path / "whole"), rel=1e-6)
