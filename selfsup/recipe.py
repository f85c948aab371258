"""Defaults that fit the data: the options whose right value depends on the data, derived from
it when the user leaves them unset, and said once at the start of a run with the reason.

The papers' recipes are written for their data (224-px ImageNet crops, 16 kHz speech); a run
on 28-px images or 8 kHz telephone speech needs them translated, and a user's own folder of
28-px images must get the same translation as Fashion-MNIST does. Each modality knows its own
rules (``Modality.fitted_defaults``: crop scale and blur from the image size, mask span from
the frame rate); the engine's rules (learning rate from the batch size and optimizer, warm-up
from the run length) are said here. Only options the user did not name are changed: a value
in a preset or on the command line always wins, and the run's ``config.yaml`` records what
was chosen, so it reproduces the run as it ran.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selfsup.config import RunConfig
    from selfsup.data.info import DataInfo


@dataclass(frozen=True)
class Choice:
    """One option chosen from the data: where it lives in the config, its value, and why."""

    key: str
    """Dotted config path (``method_args.augment.crop_scale``); empty for a rule that is only
    said, not written (the engine applies it as the run goes, e.g. the fitted warm-up)."""
    value: Any
    reason: str


def method_defaults(method: str) -> dict[str, Any]:
    """The method's config dataclass's defaults by field name (factories called)."""
    from selfsup.methods import method_spec

    cls = method_spec(method).config
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def user_named(section: dict[str, Any], *path: str) -> bool:
    """Whether the user's (partial) mapping ``section`` names the key at ``path``."""
    node: Any = section
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def fit_to_data(cfg: RunConfig, info: DataInfo) -> tuple[RunConfig, list[Choice]]:
    """``cfg`` with the data-dependent options the user left unset chosen from ``info``, and
    every choice made (the engine's said ones included), for ``say_choices``."""
    from selfsup.modalities import get_modality

    choices = list(get_modality(info.modality).fitted_defaults(cfg, info))
    fitted = copy.deepcopy(cfg)
    for choice in choices:
        if choice.key:
            _set(fitted, choice.key, choice.value)
    return fitted, choices + engine_choices(fitted)


def engine_choices(cfg: RunConfig) -> list[Choice]:
    """The engine's rules, said: the learning rate from the optimizer and the global batch
    (the linear scaling rule of Goyal et al. 2017, lr = base × batch / 256, which the SSL
    papers state their rates in), and the warm-up as a share of the run's steps (a time-limited
    run learns its step count from its speed after a few steps)."""
    from selfsup.engine.loop import peak_lr
    from selfsup.engine.optim import RECOMMENDED

    t = cfg.train
    choices = []
    if t.lr is None:
        world = t.devices * t.num_nodes
        lr, _ = peak_lr(cfg, world)  # the engine's own rule, said
        choices.append(
            Choice(
                "",
                lr,
                f"lr {lr:.3g}: {t.optimizer}'s {RECOMMENDED[t.optimizer][0]:g} per 256 samples "
                f"× {t.batch_size * world}/256 (linear scaling rule)",
            )
        )
    choices.append(
        Choice(
            "",
            t.warmup_fraction,
            f"warm-up {t.warmup_fraction:.0%} of the run's steps, then "
            f"{'a cosine' if t.schedule == 'cosine' else 'a linear'} decay to "
            f"{t.min_lr_ratio:g} × the peak",
        )
    )
    return choices


def say_choices(choices: list[Choice]) -> None:
    """Print the choices once, one line each, as the run starts: on standard output, with the
    run's other results (standard error holds progress, warnings and the one-line errors)."""
    from rich.console import Console

    console = Console(soft_wrap=True)
    for choice in choices:
        console.print(f"[cyan]fitted to the data[/] {choice.reason}", highlight=False)


def _set(cfg: RunConfig, key: str, value: Any) -> None:
    """Write ``value`` at the dotted ``key`` of ``cfg``: dataclass fields by attribute, the
    method's and encoder's option mappings by key (a partial section names only what it
    changes, so adding a key keeps the rest at the method's defaults)."""
    head, *rest = key.split(".")
    node: Any = cfg
    parts = [head, *rest]
    for part in parts[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            node = getattr(node, part)
    if isinstance(node, dict):
        node[parts[-1]] = value
    else:
        setattr(node, parts[-1], value)
