"""Two CPU processes under Fabric's ddp_spawn, for the tests that compare them with one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.distributed as dist
from lightning_fabric import Fabric


def launch_two(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(fabric, *args)`` in two spawned processes and return rank 0's result. Each
    process leaves its gloo group before it exits: a group alive at exit can abort the
    process ("terminate called without an active exception") after the work is done."""
    return Fabric(accelerator="cpu", devices=2, strategy="ddp_spawn").launch(_then_leave, fn, *args)


def _then_leave(fabric: Fabric, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(fabric, *args)
    finally:
        fabric.barrier()
        dist.destroy_process_group()
