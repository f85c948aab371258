"""The method registry: an explicit dict that ``selfsup list`` prints.

Adding a method is one new file under ``methods/`` with a config dataclass and an
``nn.Module`` that has ``encoder``, ``training_step`` and ``on_step_end``, plus one entry here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from selfsup.config import from_dict
from selfsup.errors import SelfsupError
from selfsup.methods.protocol import DataInfo, Method
from selfsup.methods.simclr import SimCLR, SimCLRConfig


@dataclass(frozen=True)
class MethodSpec:
    config: type
    build: Callable[..., nn.Module]
    description: str
    paper: str
    modality: str = "image"


METHODS: dict[str, MethodSpec] = {
    "simclr": MethodSpec(
        SimCLRConfig,
        SimCLR,
        "contrastive: two augmented views, projection head, NT-Xent over in-batch negatives",
        "Chen et al. 2020, arXiv:2002.05709",
    ),
}


def method_spec(name: str) -> MethodSpec:
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SelfsupError(f"unknown method {name!r}{hint}; known methods: {', '.join(METHODS)}")
    return METHODS[name]


def method_config(name: str, args: dict[str, Any]) -> Any:
    """The method's typed config from the ``method_args`` mapping, unknown keys rejected."""
    return from_dict(method_spec(name).config, args, prefix="method_args.")


def build_method(name: str, args: dict[str, Any], encoder: nn.Module, info: DataInfo) -> nn.Module:
    spec = method_spec(name)
    return spec.build(method_config(name, args), encoder, info)


__all__ = [
    "METHODS",
    "DataInfo",
    "Method",
    "MethodSpec",
    "build_method",
    "method_config",
    "method_spec",
]
