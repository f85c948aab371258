"""Probe a run's encoder on each task of a class-incremental stream, as the continual report
does (linear and kNN on all the labels of each task's classes, no baselines): the reference
row of a model trained on every task at once.

    python benchmarks/continual_joint_tasks.py runs/dg-joint 0,1,2,3,4 5,6,7,8,9
"""

from __future__ import annotations

import copy
import sys
from dataclasses import replace
from pathlib import Path

from selfsup.config import make_config
from selfsup.evaluate.run import evaluate_run


def main(run: Path, tasks: list[tuple[int, ...]]) -> None:
    cfg = make_config(run / "config.yaml")
    ev = replace(
        cfg.eval,
        protocols=("linear", "knn"),
        label_fractions=(1.0,),
        baselines=False,
        report=False,
    )
    for k, classes in enumerate(tasks):
        task = copy.deepcopy(cfg)
        task.data.classes = classes
        rows = evaluate_run(
            run, cfg=task, eval_cfg=ev, name="joint", out=run / "tasks" / f"task{k}"
        )
        print(
            f"task {k} {list(classes)}:",
            ", ".join(f"{r['protocol']} {100 * r['accuracy']:.1f}" for r in rows),
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), [tuple(int(c) for c in arg.split(",")) for arg in sys.argv[2:]])
