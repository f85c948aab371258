"""Momentum teachers as plain functions: copy a network, update it by EMA, schedule the momentum.

MoCo, BYOL, DINO and data2vec call these from their own ``__init__`` and ``on_step_end``;
nothing here is a base class or a hook.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student``: same weights and buffers, no gradients.

    Its parameters have ``requires_grad=False``, so the optimizer and DDP ignore them and
    they are moved, checkpointed and restored with the method like any other weights.
    """
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher ← m·teacher + (1 − m)·student for every parameter; float buffers (BatchNorm
    running statistics) follow the same rule, integer buffers are copied."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter lists")
    if t_params:
        torch._foreach_lerp_(t_params, [p.detach() for p in s_params], 1.0 - momentum)
    for t_buf, s_buf in zip(teacher.buffers(), student.buffers(), strict=True):
        if t_buf.dtype.is_floating_point:
            t_buf.lerp_(s_buf, 1.0 - momentum)
        else:
            t_buf.copy_(s_buf)


def cosine_momentum(base: float, final: float, progress: float) -> float:
    """BYOL's schedule: m = final − (final − base)·(cos(π·progress) + 1)/2, so m = base at the
    start and ``final`` at the end of training (``progress`` in [0, 1])."""
    progress = min(1.0, max(0.0, progress))
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


def linear_warmup(start: float, end: float, progress: float, warmup: float) -> float:
    """``start`` rising linearly to ``end`` over the first ``warmup`` fraction of training, then
    ``end`` (DINO's teacher temperature)."""
    if warmup <= 0 or progress >= warmup:
        return end
    return start + (end - start) * max(0.0, progress) / warmup
