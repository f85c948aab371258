"""Losses compute in float32 whatever precision the step runs in.

Under ``bf16-mixed`` autocast would run a loss's matrix products in bfloat16, whose 8-bit
mantissa blurs what these losses are about: contrastive logits up to 1/τ, a Barlow Twins
cross-correlation of many small terms, DINO's sharpened softmax. The encoder keeps its
mixed precision; only the loss leaves it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

Forward = TypeVar("Forward", bound=Callable[..., Any])


def float32_forward(forward: Forward) -> Forward:
    """Decorate a loss's ``forward``: autocast off, floating-point tensor arguments as float32."""

    @functools.wraps(forward)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        device = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
        args = tuple(
            a.float() if isinstance(a, Tensor) and a.is_floating_point() else a for a in args
        )
        with torch.autocast(device, enabled=False):
            return forward(self, *args, **kwargs)

    return wrapped  # type: ignore[return-value]
