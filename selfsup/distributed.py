"""Cross-process helpers that are correct in one process too.

Losses call these instead of ``torch.distributed`` directly, so the same loss runs on a
laptop and under DDP: with one process every function is the identity.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, ...) from every process along dim 0 -> (world * B, ...).

    Gradients flow back to every process's slice (the backward is a reduce-scatter), so a
    loss on the gathered tensor trains all processes as if they were one big batch.
    """
    if not is_distributed():
        return x
    import warnings

    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # its replacement is not public API yet
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x.contiguous()), dim=0)


def mean_with_grad(x: Tensor) -> Tensor:
    """Mean of ``x`` (any shape) over processes: a batch statistic (an average over equal
    shares of the batch) made whole-batch. Its value is the mean; its gradient reaches the
    local ``x`` unscaled, which DDP's averaging of gradients over the P processes turns into
    the whole batch's (d mean / d x_r = 1/P). No collective runs in the backward pass."""
    if not is_distributed():
        return x
    return x + (all_reduce_mean(x) - x).detach()


def mean_over_processes(total: Tensor, count: Tensor | int) -> Tensor:
    """``Σ_p total_p / Σ_p count_p``: the mean over the elements of every process's share
    (masked tokens, graph nodes) that one process holding the whole batch computes, when the
    shares hold different numbers of them. Each process returns its ``total`` over the
    global count, times P: DDP averages gradients over the P processes, which makes the
    gradient that of the global mean, and the engine's mean of the processes' losses is its
    value. One process: ``total / max(count, 1)``; a count of 0 everywhere gives 0."""
    count = torch.as_tensor(count, device=total.device)
    if not is_distributed():
        return total / count.clamp(min=1)
    everywhere = count.detach().to(total.dtype).clone()  # no host sync: it stays a tensor
    dist.all_reduce(everywhere)
    return total * (world_size() / everywhere.clamp(min=1))


def global_mean(values: Tensor) -> Tensor:
    """The mean of ``values`` (any shape) over every process's elements
    (``mean_over_processes``); one process: ``values.mean()``."""
    if not is_distributed():
        return values.mean()
    return mean_over_processes(values.sum(), values.numel())


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over processes, without gradient (for logging and statistics)."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world_size()


def machine_id() -> str:
    """Names the machine this process runs on: the kernel's boot id (containers on one host
    share it, as they share its cores), else the host name."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return socket.gethostname()


def processes_on_this_machine() -> int:
    """How many processes of the group run on this machine, this one included; 1 in one process.

    Counted, not inferred from ``--devices`` and ``--num-nodes``: two "nodes" may share a machine
    (torchrun agents on the loopback address). A collective call: every process must make it.
    """
    if not is_distributed():
        return 1
    names: list[str | None] = [None] * world_size()
    dist.all_gather_object(names, machine_id())
    return names.count(machine_id())


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which taskset and container
    CPU sets narrow), not all the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
