"""A fake clock for the engine's time limits: every training step takes one second."""

from __future__ import annotations

import types

import pytest

import selfsup.engine.loop as loop
from selfsup.engine.optim import cosine_lr


def one_second_steps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Make the engine's clock read the number of steps begun, so each step takes 1 s, and
    record (step, horizon) of every learning rate the engine looks up; returns the record."""
    seen: list[tuple[int, int]] = []

    def recorded(step: int, total: int, peak: float, warmup: int, min_ratio: float = 0.0) -> float:
        seen.append((step, total))
        return cosine_lr(step, total, peak, warmup, min_ratio)

    monkeypatch.setattr(loop, "cosine_lr", recorded)
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: float(len(seen))))
    return seen
