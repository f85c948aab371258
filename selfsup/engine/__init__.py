"""The engine runs any method: loop, optimizer, schedule, precision, distribution, checkpoints.

The names below load ``selfsup.engine.loop`` (and Lightning Fabric with it) on first use
(PEP 562), so the light parts (``optim``, ``checkpoint``, ``progress``) import quickly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selfsup.engine.loop import (
        CollapseDetected,
        TrainingDiverged,
        TrainResult,
        make_fabric,
        train,
    )

__all__ = ["CollapseDetected", "TrainResult", "TrainingDiverged", "make_fabric", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("selfsup.engine.loop"), name)
    raise AttributeError(f"module 'selfsup.engine' has no attribute {name!r}")
