"""bf16-mixed against float32: the same SimCLR run at the same number of steps, per seed.

    python benchmarks/precision.py                        # Fashion-MNIST, 300 steps, seeds 0-2
    python benchmarks/precision.py --steps 1000 --seeds 0 1 2 3 4

Each seed trains once per precision from the same initial weights on the same batches and
the same views (views are made in float32 under every precision), so a paired difference
is what bf16 arithmetic costs. Steps, not time, are the budget: an emulated bf16 (a CPU
without AVX512-BF16) is slower per step, and a time budget would measure that instead.
Prints a markdown table: linear-probe and kNN accuracy (100% of the labels, one probe seed)
per seed and precision, mean ± std, the paired bf16 - float32 difference, wall time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from selfsup.api import pretrain

PRECISIONS = ("32-true", "bf16-mixed")


def one_run(args: argparse.Namespace, precision: str, seed: int, root: Path) -> dict:
    start = time.perf_counter()
    run = pretrain(
        method=args.method,
        data=args.data,
        out=str(root / f"{precision}-{seed}"),
        train={
            "max_steps": args.steps,
            "max_time": None,
            "batch_size": args.batch_size,
            "precision": precision,
            "seed": seed,
            "progress": False,
        },
        eval={
            "protocols": ["linear", "knn"],
            "label_fractions": [1.0],
            "seeds": [0],
            "baselines": False,
            "report": False,
            "max_train": args.max_train,
        },
    )
    got = {row["protocol"]: 100 * row["accuracy"] for row in run.eval_rows}
    return {**got, "steps": run.train.steps, "seconds": time.perf_counter() - start}


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", default="simclr")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--max-train", type=int, help="probe on this many labelled images (default: all)"
    )
    args = p.parse_args()

    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for precision in PRECISIONS:
                results[precision, seed] = one_run(args, precision, seed, Path(tmp))
                r = results[precision, seed]
                print(
                    f"seed {seed} {precision}: linear {r['linear']:.2f} kNN {r['knn']:.2f} "
                    f"({r['steps']} steps, {r['seconds']:.0f} s)",
                    flush=True,
                )

    probe = f", probes on {args.max_train} labels" if args.max_train else ""
    print(f"\n{args.method} on {args.data}, {args.steps} steps of {args.batch_size}{probe}\n")
    print(
        "| seed | float32 linear | bf16 linear | Δ | float32 kNN | bf16 kNN | Δ | s (f32 / bf16) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    deltas: dict[str, list[float]] = {"linear": [], "knn": []}
    for seed in args.seeds:
        a, b = results["32-true", seed], results["bf16-mixed", seed]
        for key in deltas:
            deltas[key].append(b[key] - a[key])
        print(
            f"| {seed} | {a['linear']:.2f} | {b['linear']:.2f} | {b['linear'] - a['linear']:+.2f} "
            f"| {a['knn']:.2f} | {b['knn']:.2f} | {b['knn'] - a['knn']:+.2f} "
            f"| {a['seconds']:.0f} / {b['seconds']:.0f} |"
        )
    column = {
        (precision, key): [results[precision, seed][key] for seed in args.seeds]
        for precision in PRECISIONS
        for key in deltas
    }
    print(
        f"| mean ± std | {mean_std(column['32-true', 'linear'])} "
        f"| {mean_std(column['bf16-mixed', 'linear'])} | {mean_std(deltas['linear'])} "
        f"| {mean_std(column['32-true', 'knn'])} | {mean_std(column['bf16-mixed', 'knn'])} "
        f"| {mean_std(deltas['knn'])} | |"
    )


if __name__ == "__main__":
    main()
