"""Many short pretraining runs side by side on one machine (a GPU holds 16 of the convnet
runs at once), each for a fixed number of steps, then a table of their linear-probe and
kNN accuracy at 100% of the labels, and of each group's mean over its seeds.

    python benchmarks/side_by_side.py benchmarks/specs/fm-seeds.txt --out runs/seeds

Each line of the spec file is ``NAME CONFIG STEPS [ARGS...]``: a run folder name, a preset,
the step count and any further `selfsup pretrain` arguments. Runs whose names differ only
by a ``-sN`` suffix form a group (the seeds of one setting). Every run trains in float32
with no time limit and is evaluated on one seed of 100% of the labels. Run the command
again after an interruption: finished runs in ``--out`` are kept, unfinished ones start
over.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

FIXED = [
    "--precision", "32-true",
    "--set", "train.max_time=null",
    "--set", "eval.seeds=[0]",
    "--set", "eval.label_fractions=[1.0]",
    "--set", "eval.baselines=false",
]  # fmt: skip


def read_spec(path: Path) -> list[tuple[str, list[str]]]:
    runs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if len(words) < 3 or not words[2].isdigit():
            sys.exit(f"{path}:{number}: want NAME CONFIG STEPS [ARGS...], got {line!r}")
        name, config, steps, *extra = words
        runs.append((name, ["--config", config, "--max-steps", steps, *extra]))
    names = [name for name, _ in runs]
    if len(set(names)) != len(names):
        sys.exit(f"{path}: run names repeat")
    return runs


def accuracies(run: Path) -> tuple[float, float] | None:
    path = run / "eval.json"
    if not path.is_file():
        return None
    rows = [r for r in json.loads(path.read_text()) if r.get("label_fraction") == 1.0]
    got = {r["protocol"]: 100 * r["accuracy"] for r in rows}
    return got.get("linear", float("nan")), got.get("knn", float("nan"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/side-by-side"))
    parser.add_argument("--data", help="--data for every run, e.g. fashion-mnist:FOLDER")
    parser.add_argument("--parallel", type=int, default=16, help="runs at a time")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    data = ["--data", args.data] if args.data else []
    waiting = [(n, c) for n, c in read_spec(args.spec) if accuracies(args.out / n) is None]
    print(f"{len(waiting)} runs to make, {args.parallel} at a time", flush=True)
    started = time.monotonic()
    running: dict[str, tuple[subprocess.Popen, IO]] = {}
    while waiting or running:
        while waiting and len(running) < args.parallel:
            name, command = waiting.pop(0)
            argv = [sys.executable, "-m", "selfsup", "pretrain", *command, *data, *FIXED]
            argv += ["--out", str(args.out / name)]
            shutil.rmtree(args.out / name, ignore_errors=True)  # an unfinished earlier try
            log = (args.out / f"{name}.log").open("w")
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            running[name] = process, log
        time.sleep(2)
        for name, (process, log) in list(running.items()):
            if process.poll() is not None:
                log.close()
                del running[name]
                took = time.monotonic() - started
                print(f"{took:6.0f} s  {name}: exit {process.returncode}", flush=True)

    groups: dict[str, list[tuple[float, float]]] = {}
    print("\nrun\tlinear\tkNN")
    for name, _ in read_spec(args.spec):
        got = accuracies(args.out / name)
        print(f"{name}\t" + ("no eval.json" if got is None else f"{got[0]:.2f}\t{got[1]:.2f}"))
        if got is not None:
            groups.setdefault(re.sub(r"-s\d+$", "", name), []).append(got)
    print("\nsetting\tseeds\tlinear mean ± std\tmin-max\tkNN mean")
    for group, values in groups.items():
        linear = [v[0] for v in values]
        spread = statistics.stdev(linear) if len(linear) > 1 else 0.0
        knn = statistics.mean(v[1] for v in values)
        print(
            f"{group}\t{len(values)}\t{statistics.mean(linear):.2f} ± {spread:.2f}\t"
            f"{min(linear):.2f}-{max(linear):.2f}\t{knn:.2f}"
        )


if __name__ == "__main__":
    main()
