"""Choosing the numeric precision and the device: what ``precision="auto"`` means."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


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


def cuda_usable(accelerator: str) -> bool:
    return accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` -> bf16-mixed on GPUs with bf16 and CPUs with native bf16, 16-mixed on older
    GPUs, 32-true elsewhere. Any explicit choice is returned unchanged."""
    if precision != "auto":
        return precision
    if cuda_usable(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def resolve_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if accelerator == "gpu" else accelerator
