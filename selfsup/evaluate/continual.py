"""The evaluation of a continual run: accuracy on the old data and the new, and forgetting.

Two encoders are probed on every task of the stream (each earlier task's labelled data and
this run's): the one the run started from (exported in ``RUN/start/``, the parent's final
weights) and the one it ended with. For an earlier task, forgetting = accuracy before this
run − accuracy after it (positive: the run forgot; the definition of Chaudhry et al. 2018,
"Riemannian Walk", for one step of the stream); for the new task the difference after −
before is what the run learned. The probes are the run's frozen-feature protocols (linear,
kNN) on all the labels, with the run's seeds; the rows go to ``continual.json`` and each
probe's own rows to ``continual/<before|after>-task<k>/eval.json``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.table import Table

from selfsup.config import DataConfig, RunConfig, from_dict, to_dict
from selfsup.engine.progress import console
from selfsup.evaluate.run import evaluate_run

FORGETTING_PROBES = ("linear", "knn")


def evaluate_continual(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    """Probe the start and end encoders of the continual run ``run_dir`` on every task;
    writes and returns ``continual.json``."""
    from selfsup.continual import START

    probes = tuple(p for p in cfg.eval.protocols if p in FORGETTING_PROBES) or ("linear",)
    ev = replace(cfg.eval, protocols=probes, label_fractions=(1.0,), baselines=False, report=False)
    tasks = [*cfg.continual.stream, {"name": cfg.data.name, "classes": to_dict(cfg.data.classes)}]
    rows = []
    for k, section in enumerate(tasks):
        task_cfg = copy.deepcopy(cfg)
        task_cfg.data = from_dict(DataConfig, {**to_dict(cfg.data), **section}, prefix="data.")
        task_cfg.eval = ev
        accuracy = {}
        for when, folder in (("before", run_dir / START), ("after", run_dir)):
            console.print(
                f"continual: the encoder {when} this run on task {k} ({_task_name(section)})"
            )
            found = evaluate_run(
                folder,
                cfg=task_cfg,
                eval_cfg=ev,
                name=when,
                out=run_dir / "continual" / f"{when}-task{k}",
            )
            accuracy[when] = {r["protocol"]: r["accuracy"] for r in found if r["encoder"] == when}
        new = k == len(tasks) - 1
        for protocol in probes:
            before, after = accuracy["before"][protocol], accuracy["after"][protocol]
            row = {
                "task": k,
                "data": section["name"],
                "classes": section.get("classes"),
                "role": "new" if new else "old",
                "protocol": protocol,
                "before": before,
                "after": after,
            }
            row["gain" if new else "forgetting"] = (after - before) if new else (before - after)
            rows.append(row)
    old = [r for r in rows if r["role"] == "old"]
    summary = {
        "parent": cfg.continual.parent,
        "replay": cfg.continual.replay,
        "replay_ratio": cfg.continual.replay_ratio,
        "rows": rows,
        "forgetting": {
            p: sum(r["forgetting"] for r in old if r["protocol"] == p) / max(1, len(tasks) - 1)
            for p in probes
        },
    }
    (run_dir / "continual.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(_table(rows))
    return summary


def _task_name(section: dict[str, Any]) -> str:
    classes = section.get("classes")
    return section["name"] + (f" classes {classes}" if classes is not None else "")


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="continual: accuracy before and after this run (%)")
    for column in ("task", "data", "protocol", "before", "after", "forgetting / gain"):
        table.add_column(column, justify="left" if column in ("data", "protocol") else "right")
    for r in rows:
        label = "forgetting" if r["role"] == "old" else "gain"
        change = float(r[label])
        table.add_row(
            f"{r['task']} ({r['role']})",
            _task_name({"name": r["data"], "classes": r["classes"]}),
            r["protocol"],
            f"{100 * r['before']:.1f}",
            f"{100 * r['after']:.1f}",
            f"{label} {100 * change:+.1f}",
        )
    return table
