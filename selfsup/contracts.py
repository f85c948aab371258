"""What every method offers the engine (``Method``), and the rules every token loss shares.

What a method is told about its data when built is ``selfsup.data.info.DataInfo``.

A method is an ``nn.Module`` that satisfies ``Method`` structurally; it does not inherit
from anything of ours. It never touches the optimizer, the devices or files.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

IGNORE_INDEX = -100
"""A target at this value is ignored by every token loss (masked tokens, visual tokens,
next-token targets at padding): PyTorch's ``cross_entropy`` default."""


@runtime_checkable
class Method(Protocol):
    encoder: nn.Module
    """The part that is exported and evaluated."""

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One step's loss (key ``"loss"``) and metrics; key ``"features"`` (B, D), detached
        encoder outputs of one view, feeds the collapse monitor, as does the optional key
        ``"embedding"`` (B, K), the detached head output the loss sees."""
        ...

    def on_step_end(self, progress: float) -> None:
        """After each optimizer step; ``progress`` in [0, 1] drives EMA and temperature schedules."""
        ...


def missing_members(obj: Any) -> list[str]:
    """The members of ``Method`` that ``obj`` lacks (empty when it is a method).

    ``isinstance(obj, Method)`` cannot answer this for an ``nn.Module``: from Python 3.12 on,
    runtime protocols look attributes up statically and miss submodules such as ``encoder``,
    which ``nn.Module`` keeps in ``_modules``.
    """
    missing = [] if isinstance(getattr(obj, "encoder", None), nn.Module) else ["encoder"]
    missing += [n for n in ("training_step", "on_step_end") if not callable(getattr(obj, n, None))]
    return missing
