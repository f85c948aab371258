"""Hand-written evaluation rows in the format `robustness_rows` writes, for the tests of the
report and of `selfsup compare`."""

from __future__ import annotations

from typing import Any


def robustness_rows(
    encoder: str, clean: float, drops: dict[str, float], **extra: Any
) -> list[dict[str, Any]]:
    """An encoder's clean probe under each corruption at severities 1-5, losing ``drops[kind]``
    of accuracy per severity, then its ``corruption: "mean"`` row; ``extra`` keys (such as
    ``data``) go into every row."""
    shifted = [
        {
            "encoder": encoder,
            "protocol": "robustness",
            "corruption": kind,
            "severity": severity,
            "accuracy": clean - drop * severity,
            "clean_accuracy": clean,
            **extra,
        }
        for kind, drop in drops.items()
        for severity in range(1, 6)
    ]
    mean = {
        "encoder": encoder,
        "protocol": "robustness",
        "corruption": "mean",
        "accuracy": sum(r["accuracy"] for r in shifted) / len(shifted),
        "clean_accuracy": clean,
        "corruptions": len(drops),
        **extra,
    }
    return [*shifted, mean]
