"""Choosing the numeric precision and the device: what ``precision="auto"`` means."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal, get_args

import torch

from selfsup.errors import SelfsupError

CpuPrecision = Literal["bf16-mixed", "32-true"]

AUTO_PRECISION_ENV = "SELFSUP_AUTO_PRECISION"
"""Environment variable that decides what ``auto`` means on a CPU, whatever the CPU computes:
``bf16-mixed`` or ``32-true``. CI sets it to run the precision-sensitive tests under the
resolution that the machine would not pick. It does not apply on a GPU, whose ``auto`` is
bf16 or fp16 by what the GPU supports (pass ``--precision`` to choose there)."""


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16).

    Without them, oneDNN emulates bf16 and a training step runs slower than in float32
    (``benchmarks/throughput.py`` on such a CPU: 269 samples/s in bf16-mixed, 763 in float32).
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def native_cpu_precision() -> CpuPrecision:
    """What ``auto`` means on this CPU when nothing overrides it."""
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def auto_cpu_precision() -> CpuPrecision:
    """What ``auto`` means on a CPU: ``$SELFSUP_AUTO_PRECISION`` if set, else what the CPU
    computes natively."""
    value = os.environ.get(AUTO_PRECISION_ENV, "")
    if not value:
        return native_cpu_precision()
    if value not in get_args(CpuPrecision):
        raise SelfsupError(
            f"{AUTO_PRECISION_ENV} must be bf16-mixed or 32-true (what precision=auto means "
            f"on a CPU), got {value!r}: set one of them or unset it"
        )
    return value  # type: ignore[return-value]


def cuda_usable(accelerator: str) -> bool:
    return accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` -> bf16-mixed on GPUs with bf16 and CPUs with native bf16, 16-mixed on older
    GPUs, 32-true elsewhere; on a CPU ``$SELFSUP_AUTO_PRECISION`` overrides the hardware's
    choice. Any explicit choice is returned unchanged."""
    if precision != "auto":
        return precision
    if cuda_usable(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return auto_cpu_precision()


def resolve_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if accelerator == "gpu" else accelerator
