"""The image–text tables of docs/benchmarks.md, from run folders of pair methods.

    selfsup pretrain --config openclipart-clip --out runs/clip > runs/clip.log 2>&1
    selfsup pretrain --config openclipart-clip --method siglip --out runs/siglip > runs/siglip.log 2>&1
    python benchmarks/pairs_table.py runs/clip runs/siglip ... [--simclr runs/simclr]

Prints three markdown tables: retrieval recall@1/5/10 both ways (retrieval.json), zero-shot
accuracy on the labels (zero_shot.json, with the random-init towers and the TF-IDF caption
baseline of the same captions), and the image tower's linear probe and kNN (eval.json) beside
an image-only run on the same images (``--simclr``), random init and raw pixels. Each row
names its run's data (category words cut or kept), steps, final loss and wall time (from
``RUN.log``, GNU time's ``-v`` report, when it is there).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from table import _last, _time_report


def _json(run: Path, name: str) -> list[dict]:
    path = run / name
    return json.loads(path.read_text()) if path.is_file() else []


def _config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def _wall(run: Path) -> str:
    return _time_report(run.parent / f"{run.name}.log")[1]


def _first(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _pct(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if 0 < value < 1 else f"{value:.1f}"


def run_name(run: Path) -> str:
    """The run folder's name, which tells runs of one method apart, with method and data."""
    cfg = _config(run)
    return f"`{run.name}` ({cfg['method']}, {cfg['data']['name']})"


def retrieval_table(runs: list[Path]) -> list[str]:
    keys = [f"{d}_r{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)]
    lines = [
        "| towers | steps | final loss | image→text R@1 | R@5 | R@10 | text→image R@1 | R@5 | R@10 | wall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    random_row = None
    for run in runs:
        rows = _json(run, "retrieval.json")
        method = _config(run)["method"]
        mine = _first(rows, encoder=method)
        random_row = random_row or _first(rows, encoder="random-init")
        step, loss = _last(run / "metrics.csv", "step"), _last(run / "metrics.csv", "loss")
        cells = [_pct(mine and mine[k]) for k in keys]
        lines.append(
            f"| {run_name(run)} | {int(step or 0)} | {'–' if loss is None else f'{loss:.2f}'} | "
            + " | ".join(cells)
            + f" | {_wall(run)} |"
        )
    if random_row:
        lines.append(
            "| random init | | | " + " | ".join(_pct(random_row[k]) for k in keys) + " | |"
        )
    return lines


def zero_shot_table(runs: list[Path]) -> list[str]:
    lines = ["| classifier | captions | accuracy (%) | mean per class (%) |", "|---|---|---|---|"]
    baselines: dict[tuple[str, str], dict] = {}
    chance = majority = None
    for run in runs:
        rows = _json(run, "zero_shot.json")
        method, data = _config(run)["method"], _config(run)["data"]["name"]
        mine = _first(rows, encoder=method)
        if mine is None:
            continue
        chance, majority = mine["chance"], mine["majority"]
        lines.append(f"| `{run.name}` ({method}) | {data} | {_zero_cells(mine)} |")
        for r in rows:
            if r["encoder"] != method:
                baselines.setdefault((r["encoder"], data), r)
    for (encoder, data), row in sorted(baselines.items()):
        lines.append(f"| {encoder} | {data} | {_zero_cells(row)} |")
    if chance is not None:
        lines.append(f"| chance | | {_pct(chance)} | {_pct(chance)} |")
        lines.append(f"| majority class | | {_pct(majority)} | {_pct(chance)} |")
    return lines


def _zero_cells(row: dict) -> str:
    return f"{_pct(row['zero_shot_accuracy'])} | {_pct(row.get('zero_shot_balanced_accuracy'))}"


def probe_table(runs: list[Path], simclr: Path | None) -> list[str]:
    fractions = (0.1, 1.0)
    lines = [
        "| image encoder | linear 10% | linear 100% | kNN 10% | kNN 100% |",
        "|---|---|---|---|---|",
    ]

    def row(label: str, rows: list[dict], encoder: str) -> str:
        cells = [
            _pct(
                (r := _first(rows, encoder=encoder, protocol=p, label_fraction=f))
                and 100 * r["accuracy"]
            )
            for p in ("linear", "knn")
            for f in fractions
        ]
        return f"| {label} | " + " | ".join(cells) + " |"

    baseline_rows: list[dict] = []
    for run in [*runs, *([simclr] if simclr else [])]:
        rows = _json(run, "eval.json")
        lines.append(row(run_name(run), rows, _config(run)["method"]))
        if not baseline_rows and _first(rows, encoder="random-init"):
            baseline_rows = rows
    if baseline_rows:
        lines.append(row("random init", baseline_rows, "random-init"))
        lines.append(row("raw pixels", baseline_rows, "raw"))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of clip/siglip/align")
    parser.add_argument("--simclr", type=Path, help="an image-only run on the same images")
    args = parser.parse_args()
    for table in (
        retrieval_table(args.runs),
        zero_shot_table(args.runs),
        probe_table(args.runs, args.simclr),
    ):
        print("\n".join(table), end="\n\n")


if __name__ == "__main__":
    main()
