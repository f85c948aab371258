"""Where `selfsup pretrain`'s time goes, by the torch profiler.

    python benchmarks/profile_loop.py                      # SimCLR, Fashion-MNIST, batch 256
    python benchmarks/profile_loop.py --method byol --steps 40

Runs the real pretraining loop (``selfsup.pretrain``) for ``--warm`` + ``--steps`` steps on
the built-in data, with the run's own defaults, and profiles the last ``--steps`` of them with
``torch.profiler`` (CPU activities; CUDA too when the run trains on a GPU). The loop's parts
are labelled from outside the engine (nothing in selfsup is changed to measure it): the
batch (sampling, decoding, collation), the host-to-device copy, the step's forward (views
included), the backward, the optimizer (torch's own label), gradient clipping, logging, the
collapse monitor and checkpoint writes. Prints two markdown tables: the parts' share of the
profiled wall time, and the ten operators with the most self CPU time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lightning_fabric import Fabric
from torch.profiler import ProfilerActivity, profile, record_function

import selfsup.engine as engine
from selfsup.api import pretrain
from selfsup.engine import checkpoint, loop

PARTS = {
    "selfsup: batch": "batch: sampling, decoding, collation",
    "selfsup: to device": "host-to-device copy",
    "selfsup: forward": "forward (views, encoder, loss)",
    "selfsup: backward": "backward",
    "optimizer": "optimizer step (torch's label)",
    "selfsup: clip": "gradient clipping",
    "selfsup: log": "logging (Fabric log_dict)",
    "selfsup: collapse monitor": "collapse monitor",
    "selfsup: checkpoint": "checkpoint writes",
}


def labelled(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with record_function(name):
            return fn(*args, **kwargs)

    return wrapped


def label_the_loop() -> None:
    """Wrap the engine's parts in ``record_function`` labels (this process only)."""
    batches = loop._batches

    def labelled_batches(*args: Any, **kwargs: Any) -> Iterator[Any]:
        it = iter(batches(*args, **kwargs))
        while True:
            with record_function("selfsup: batch"):
                try:
                    batch = next(it)
                except StopIteration:
                    return
            yield batch

    loop._batches = labelled_batches
    step_function = loop._step_function

    def labelled_step_function(*args: Any, **kwargs: Any) -> Any:
        fn, already_backward = step_function(*args, **kwargs)
        return labelled("selfsup: forward", fn), already_backward

    loop._step_function = labelled_step_function
    loop._monitor_collapse = labelled("selfsup: collapse monitor", loop._monitor_collapse)
    checkpoint.save = labelled("selfsup: checkpoint", checkpoint.save)
    Fabric.to_device = labelled("selfsup: to device", Fabric.to_device)
    Fabric.backward = labelled("selfsup: backward", Fabric.backward)
    Fabric.clip_gradients = labelled("selfsup: clip", Fabric.clip_gradients)
    Fabric.log_dict = labelled("selfsup: log", Fabric.log_dict)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", default="simclr")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--warm", type=int, default=5, help="steps run before profiling starts")
    p.add_argument("--steps", type=int, default=30, help="steps profiled")
    args = p.parse_args()

    label_the_loop()
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    prof = profile(activities=activities)
    window: dict[str, float] = {}

    def on_step(step: int, loss: float) -> None:
        if step == args.warm:
            prof.start()
            window["start"] = time.perf_counter()
        elif step == args.warm + args.steps:
            window["end"] = time.perf_counter()
            prof.stop()

    original_train = engine.train

    def train_with_hook(*a: Any, **kw: Any) -> Any:
        kw.setdefault("on_step", on_step)
        return original_train(*a, **kw)

    engine.train = train_with_hook  # what `pretrain` calls
    with tempfile.TemporaryDirectory() as tmp:
        pretrain(
            method=args.method,
            data=args.data,
            out=tmp,
            evaluate=False,
            train={
                "max_steps": args.warm + args.steps + 1,
                "max_time": None,
                "batch_size": args.batch_size,
                "progress": False,
            },
        )
    wall_us = (window["end"] - window["start"]) * 1e6
    events = prof.key_averages()
    print(
        f"\n{args.method} on {args.data}, batch {args.batch_size}: {args.steps} steps profiled, "
        f"{wall_us / 1e6 / args.steps * 1e3:.0f} ms per step, "
        f"{args.steps * args.batch_size / (wall_us / 1e6):.0f} samples/s under the profiler\n"
    )
    print("| part of the loop | CPU ms per step | share of wall time |")
    print("|---|---|---|")
    covered = 0.0
    for key, what in PARTS.items():
        total = sum(
            e.cpu_time_total
            for e in events
            if e.key == key or (key == "optimizer" and e.key.startswith("Optimizer.step#"))
        )
        covered += total
        print(f"| {what} | {total / args.steps / 1e3:.1f} | {100 * total / wall_us:.1f}% |")
    rest = wall_us - covered
    print(
        f"| the rest (Python between the parts) | {rest / args.steps / 1e3:.1f} | {100 * rest / wall_us:.1f}% |"
    )
    print("\n| operator | self CPU ms per step | share of wall time |")
    print("|---|---|---|")
    ops = sorted(
        (e for e in events if not e.key.startswith(("selfsup:", "Optimizer.", "ProfilerStep"))),
        key=lambda e: e.self_cpu_time_total,
        reverse=True,
    )
    for e in ops[:10]:
        print(
            f"| `{e.key}` | {e.self_cpu_time_total / args.steps / 1e3:.1f} "
            f"| {100 * e.self_cpu_time_total / wall_us:.1f}% |"
        )


if __name__ == "__main__":
    main()
