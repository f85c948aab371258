"""What the benchmarks of a selfsup training step against a Hugging Face model of the same size
share (``mlm_throughput.py``, ``wav2vec2_throughput.py``, ``clip_throughput.py``).

Each model trains in a fresh spawned process, so that its peak memory and its thread pool are
its own; the two alternate (selfsup, HF, selfsup, HF, ...) over rounds, so that the spread of
the timings on a shared machine shows; a step runs under the same autocast on both sides and
is timed alone, synchronised with the GPU; ``--in-process`` runs both models in the caller's
process instead, which starts quicker (smoke tests) but mixes their memory peaks.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from selfsup.errors import SelfsupError

Model = Literal["selfsup", "hf"]
MODELS: tuple[Model, Model] = ("selfsup", "hf")
RunModel = Callable[[Model, Any], dict[str, Any]]
"""``run_model(model, spec) -> results``: one model's whole run; module-level, so that a
spawned process can import it."""


def require_transformers() -> None:
    """Raise a one-line SelfsupError unless Hugging Face transformers is installed."""
    if importlib.util.find_spec("transformers") is None:
        raise SelfsupError(
            "this benchmark needs Hugging Face transformers: pip install 'selfsup[bench]'"
        )


def run_parser(doc: str, *, steps: int, warmup: int, rounds: int = 2) -> argparse.ArgumentParser:
    """A parser with the script's docstring as its help and the options every side-by-side
    benchmark takes: steps, rounds, threads, device, precision, seed, ``--in-process`` and
    ``--json``, with the script's default counts."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=steps, help="timed steps per model and round")
    p.add_argument("--warmup", type=int, default=warmup, help="untimed steps before them")
    p.add_argument("--rounds", type=int, default=rounds, help="selfsup/HF pairs, run alternately")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads in each model's process (default: all cores)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument(
        "--precision",
        choices=["32", "bf16"],
        default="32",
        help="32: float32; bf16: bf16 autocast (worth it on CPUs with AVX512-BF16/AMX, and GPUs)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run both models in this process: starts quicker (for smoke tests), but peak "
        "memory is then the whole process's, not each model's",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write every number to this file")
    return p


def check_run_arguments(args: argparse.Namespace, positive: Sequence[str] = ()) -> None:
    """One-line SelfsupErrors for counts below their minimum and a GPU that is not there."""
    for name in ("steps", "rounds", "threads", *positive):
        if getattr(args, name) < 1:
            raise SelfsupError(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        raise SelfsupError("--warmup must be 0 or more (2-3 steps let the allocator settle)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SelfsupError("--device cuda but torch sees no GPU: use --device cpu")


def batch_indices(n: int, batch_size: int, count: int, seed: int) -> torch.Tensor:
    """``count`` batches of ``batch_size`` indices into ``n`` samples, in a seeded shuffled
    order, cycling through the samples when there are too few -> (count, B) int64."""
    g = torch.Generator().manual_seed(seed)
    need = batch_size * count
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(-(-need // n))])
    return order[:need].reshape(count, batch_size)


def autocast(device: str, precision: str) -> AbstractContextManager[Any]:
    """bf16 autocast for ``precision`` "bf16", nothing otherwise."""
    if precision == "bf16":
        return torch.autocast(device, dtype=torch.bfloat16)
    return nullcontext()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_baseline(device: str) -> dict[str, float]:
    """Where memory stands before the model is built (the process's peak, the GPU's
    allocation), for ``memory_used``; resets the GPU's peak."""
    baseline = {"rss": peak_rss_mb()}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        baseline["cuda"] = torch.cuda.memory_allocated() / 2**20
    return baseline


def memory_used(device: str, baseline: dict[str, float]) -> dict[str, float]:
    """Peak memory so far and its rise above ``baseline``, in MB: resident set, and on a GPU
    ``max_memory_allocated``."""
    peak = peak_rss_mb()
    used = {"peak_rss_mb": peak, "rss_increase_mb": peak - baseline["rss"]}
    if device == "cuda":
        used["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        used["cuda_increase_mb"] = used["cuda_peak_mb"] - baseline["cuda"]
    return used


def make_step(
    forward: Callable[[int], Tensor], optimizer: torch.optim.Optimizer, device: str, precision: str
) -> Callable[[int], float]:
    """``step(i)``: zero_grad, ``forward(i)`` (the loss of batch i) under the precision's
    autocast, backward, optimizer step -> the loss, the same on both sides."""

    def step(i: int) -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            loss = forward(i)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def timed_steps(
    step: Callable[[int], float], indices: range, device: str
) -> tuple[list[float], list[float]]:
    """Run ``step(i)`` for each i -> (its losses, its seconds), each step timed alone."""
    losses, seconds = [], []
    sync(device)
    for i in indices:
        start = time.perf_counter()
        losses.append(step(i))  # float(loss) waits for the step's forward on a GPU
        sync(device)
        seconds.append(time.perf_counter() - start)
    return losses, seconds


def warm_then_time(
    step: Callable[[int], float], warmup: int, total: int, device: str
) -> tuple[list[float], list[float], float]:
    """Steps 0..warmup-1 untimed, then each of warmup..total-1 timed alone -> (their losses,
    their seconds, peak memory in MB: the GPU's since the warm-up, else the process's RSS)."""
    for i in range(warmup):
        step(i)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    losses, seconds = timed_steps(step, range(warmup, total), device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else peak_rss_mb()
    return losses, seconds, peak


def run_isolated(run_model: RunModel, model: Model, spec: Any) -> dict[str, Any]:
    """``run_model(model, spec)`` in a fresh spawned process (its own memory peak and threads)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run_model, model, spec).result()


def alternate(
    run_model: RunModel,
    spec: Any,
    rounds: int,
    in_process: bool,
    say: Callable[[int, Model, dict[str, Any]], str],
) -> list[dict[str, Any]]:
    """selfsup then HF, ``rounds`` times, each result tagged with its round and announced
    with the line ``say(round, model, result)``; the caller's torch threads are kept."""
    threads = torch.get_num_threads()
    runs = []
    for round_ in range(1, rounds + 1):
        for model in MODELS:
            if in_process:
                result = run_model(model, spec)
            else:
                result = run_isolated(run_model, model, spec)
            result["round"] = round_
            runs.append(result)
            print(f"  round {round_}: {say(round_, model, result)}", flush=True)
    torch.set_num_threads(threads)  # run_model set them (in this process with --in-process)
    return runs


def summarise(
    runs: list[dict[str, Any]], model: Model, means: Sequence[str], same: Sequence[str]
) -> dict[str, Any]:
    """One model's runs in one dict: the mean of each of ``means`` that the runs hold, and
    ``same`` (parameter counts, ...) as the first run has them."""
    mine = [r for r in runs if r["model"] == model]
    out: dict[str, Any] = {k: statistics.mean(r[k] for r in mine) for k in means if k in mine[0]}
    return out | {k: mine[0][k] for k in same}


def median_table(
    args: argparse.Namespace,
    runs: list[dict[str, Any]],
    key: str,
    unit: str,
    labels: tuple[str, str],
    **extra: Any,
) -> dict[str, Any]:
    """Each model's parameters, median ``key`` over its rounds and peak memory, printed as a
    markdown table (``unit`` names the ``key`` column, ``labels`` the selfsup and HF rows) with
    the selfsup / HF ratio -> every number, written to ``args.json`` when given."""
    summary = {}
    for model in MODELS:
        mine = [r for r in runs if r["model"] == model]
        summary[model] = {
            "params": mine[0]["params"],
            key: statistics.median(r[key] for r in mine),
            "peak_mb": max(r["peak_mb"] for r in mine),
        }
    print(f"\n| implementation | parameters | {unit} (median) | peak memory |")
    print("|---|---|---|---|")
    for model, label in zip(MODELS, labels, strict=True):
        s = summary[model]
        print(f"| {label} | {s['params']:,} | {s[key]:.1f} | {s['peak_mb']:.0f} MB |")
    ratio = summary["selfsup"][key] / summary["hf"][key]
    print(f"\nselfsup / HF throughput: {ratio:.2f}x")
    result = {"runs": runs, "summary": summary, "ratio": ratio, **extra}
    write_json(args.json, result)
    return result


def memory_note(in_process: bool, device: str) -> str:
    """What the memory columns measure."""
    if in_process:
        return (
            "memory: --in-process ran both models in one process, so peak memory and its "
            "rise are the process's so far, not each model's: run without it to compare memory."
        )
    if device == "cpu":
        return (
            "memory: ru_maxrss of each model's own process; +RSS is its rise above that "
            "process's peak once torch, the library and the batches were loaded."
        )
    return (
        "memory: torch.cuda.max_memory_allocated in each model's own process (the table); "
        "+RSS is host memory."
    )


def finish(
    args: argparse.Namespace,
    runs: list[dict[str, Any]],
    summary: dict[str, dict[str, Any]],
    notes: list[str],
    key: str,
    **extra: Any,
) -> dict[str, Any]:
    """Print the notes and the selfsup / HF ratio of ``key`` (overall, of the means, and per
    round); return every number, written to ``args.json`` when given."""
    print()
    for note in notes:
        print(f"- {note}")
    ratio = summary["selfsup"][key] / summary["hf"][key]
    per_round = [a[key] / b[key] for a, b in zip(runs[0::2], runs[1::2])]  # (selfsup, HF)
    print(f"per-round ratios: {', '.join(f'{r:.2f}' for r in per_round)}")
    print(f"selfsup / HF {key} ratio: {ratio:.2f}")
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        **extra,
        "runs": runs,
        "summary": summary,
        "notes": notes,
        f"ratio_{key}": ratio,
        "ratio_per_round": per_round,
    }
    write_json(args.json, results)
    return results


def write_json(path: Path | None, results: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))
