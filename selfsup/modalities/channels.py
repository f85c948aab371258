"""The check that data and encoder agree on channels, for modalities whose encoders are built
with ``in_channels`` (images, series)."""

from __future__ import annotations

from torch import nn

from selfsup.errors import SelfsupError


def check_channels(encoder: nn.Module, channels: int, spec: str, kind: str) -> None:
    """Raise ``SelfsupError`` when ``encoder`` was built for another channel count than the
    ``channels`` of the ``kind`` (``"images"``, ``"series"``) in ``spec``."""
    expected = (getattr(encoder, "build_args", None) or {}).get("in_channels")
    if expected is not None and channels != expected:
        raise SelfsupError(
            f"{spec!r} has {channels}-channel {kind} but the encoder expects "
            f"{expected}: pass --data with {kind} like the run's"
        )
