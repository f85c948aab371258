"""Cross-process helpers that are correct in one process too.

Losses call these instead of ``torch.distributed`` directly, so the same loss runs on a
laptop and under DDP: with one process every function is the identity.
"""

from __future__ import annotations

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


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over processes, without gradient (for logging and statistics)."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world_size()
