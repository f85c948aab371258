"""``selfsup compare RUN1 RUN2 ...``: the evaluations of several runs side by side, as one
table and one figure, so that a method is chosen by looking rather than by opening JSON.

Each run folder's ``eval.json`` (written by ``selfsup evaluate``) is read as it is. The
evaluated encoder's rows make one line per run (method, encoder, steps, precision, then the
accuracy of every protocol and label fraction, few-shot, the mean corruption accuracy); the
baselines evaluated beside it (the same architecture at random init, the raw input, the
supervised reference) make one line each, shown once for runs evaluated on the same data set
whose baseline numbers agree. The supervised reference is trained end to end, so it sits in
the ``finetune`` columns, where the fine-tuned encoders it is the reference for sit.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from selfsup.errors import SelfsupError
from selfsup.evaluate.fewshot import format_fewshot
from selfsup.evaluate.protocol import (
    format_accuracy,
    format_fraction,
    label_efficiency_rows,
    read_eval_json,
)
from selfsup.evaluate.report import (
    BASELINES,
    CSS,
    draw_curve,
    draw_label_efficiency,
    figure_to_data_uri,
    finish_log_axes,
)
from selfsup.evaluate.robustness import severity_curve

EVAL_FILE = "eval.json"
RUN_FILES = ("config.yaml", "encoder.yaml", EVAL_FILE)
"""A folder holding any of these is a run (or an evaluation written with ``--out``)."""

PROTOCOL_ORDER = ("linear", "knn", "finetune", "lora")
BASELINE_TITLES = {
    "random-init": "random init",
    "raw": "raw input",
    "supervised": "supervised reference",
}
"""How the table names each of ``report.BASELINES``, in the order of its lines."""
HEAD = ("run", "method", "encoder", "steps", "precision")


@dataclass
class Line:
    """One line of the comparison: a run's encoder, or one baseline shared by ``runs``.
    ``columns`` maps a column header to its rows (a robustness column holds the rows of every
    corruption and severity, its cell shows their mean)."""

    label: str
    runs: list[str]
    info: dict[str, str]
    data: str
    columns: dict[str, list[dict[str, Any]]]
    baseline: bool = False

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row of the line, with ``encoder`` renamed to the line's label (for plots)."""
        return [{**r, "encoder": self.label} for rows in self.columns.values() for r in rows]


@dataclass
class Comparison:
    """The lines of `compare_runs`, the table's column headers in order, a note when the
    runs were evaluated on different data sets, and the files written."""

    lines: list[Line]
    columns: list[str]
    note: str | None = None
    written: list[Path] = field(default_factory=list)

    def table(self) -> tuple[list[str], list[list[str]]]:
        """The header and the cells of the table, one list per line."""
        several_sets = len({line.data for line in self.lines}) > 1
        head = [*HEAD, *(["data"] if several_sets else []), *self.columns]
        body = [
            [
                *(line.info[key] for key in HEAD),
                *([line.data] if several_sets else []),
                *(_cell(line.columns.get(c, [])) for c in self.columns),
            ]
            for line in self.lines
        ]
        return head, body

    def markdown(self) -> str:
        """The table as GitHub markdown, after the note (if any) and before a legend line."""
        head, body = self.table()

        def markdown_line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        lines = [markdown_line(head), "|" + "---|" * len(head), *map(markdown_line, body)]
        return "\n".join([*([self.note, ""] if self.note else []), *lines, "", LEGEND])

    def figure(self) -> Figure | None:
        """`comparison_figure` of the lines."""
        return comparison_figure(self.lines)


LEGEND = (
    "Test accuracy (%): probes and fine-tuning mean ± std over seeds; few-shot mean ± 95% CI "
    "over episodes; corrupted = the clean linear probe averaged over every corruption and "
    "severity 1-5. The supervised reference is trained from scratch, in the finetune columns."
)


def compare_runs(runs: Sequence[str | Path], out: str | Path | None = None) -> Comparison:
    """Read the evaluation of each run folder and arrange it side by side; with ``out``, write
    compare.md, compare.png and compare.html there.

    Args:
        runs: run folders evaluated by ``selfsup evaluate`` (or folders its ``--out`` wrote).
        out: the folder for the files, created if needed; None writes nothing.

    Raises:
        SelfsupError: a path that is not a run, a run not evaluated yet, a run given twice.
    """
    if not runs:
        raise SelfsupError("compare needs at least one evaluated run folder")
    folders = [_run_folder(Path(r)) for r in runs]
    resolved = [f.resolve() for f in folders]
    for i, folder in enumerate(resolved):
        if folder in resolved[:i]:
            raise SelfsupError(f"{folders[i]} is given twice; pass each run once")
    names = [_name(f) for f in folders]
    labels = [n if names.count(n) == 1 else str(f) for n, f in zip(names, folders, strict=True)]
    evaluated = [_read_run(f, label) for f, label in zip(folders, labels, strict=True)]
    lines = [line for line, _ in evaluated] + _baseline_lines(evaluated)
    data_sets = list(dict.fromkeys(line.data for line, _ in evaluated))
    note = None
    if len(data_sets) > 1:
        each = "; ".join(f"{line.label}: {line.data}" for line, _ in evaluated)
        note = (
            f"The runs were evaluated on different data sets ({each}): their accuracies do not "
            "compare across data sets, and each keeps its own baselines."
        )
    comparison = Comparison(lines, _ordered_columns(lines), note)
    if out is not None:
        comparison.written = write_comparison(comparison, Path(out))
    return comparison


def _run_folder(path: Path) -> Path:
    """The run folder of ``path`` (a folder, or its eval.json), or a one-line error."""
    if path.is_file() and path.name == EVAL_FILE:
        return path.parent
    if not path.exists():
        raise SelfsupError(f"{path} does not exist; pass run folders that `selfsup pretrain` wrote")
    if not path.is_dir() or not any((path / name).is_file() for name in RUN_FILES):
        raise SelfsupError(
            f"{path} is not a run folder (no {', '.join(RUN_FILES)}); pass folders that "
            "`selfsup pretrain` or `selfsup evaluate --out` wrote"
        )
    if not (path / EVAL_FILE).is_file():
        raise SelfsupError(f"{path} has no evaluation yet: run `selfsup evaluate {path}` first")
    return path


def _run_files(folder: Path) -> Path:
    """Where the config.yaml and encoder.yaml of the run evaluated in ``folder`` are: the
    folder itself, or its parent for an evaluation written into the run (``selfsup evaluate
    RUN --out RUN/eval-robust``)."""
    for candidate in (folder, folder.parent):
        if any((candidate / name).is_file() for name in RUN_FILES[:2]):
            return candidate
    return folder


def _name(folder: Path) -> str:
    """The run's name in the table: its folder's, with the run's for an evaluation inside it."""
    files = _run_files(folder)
    return folder.name if files == folder else f"{files.name}/{folder.name}"


def _read_run(folder: Path, label: str) -> tuple[Line, dict[str, list[dict[str, Any]]]]:
    """The run's own line, and its baseline rows by baseline name."""
    rows = read_eval_json(folder / EVAL_FILE)
    if not rows:
        raise SelfsupError(
            f"{folder / EVAL_FILE} holds no rows (a modality's own protocol such as ctc writes "
            f"its own file): run `selfsup evaluate {folder}` with a probe protocol first"
        )
    own_names = [r["encoder"] for r in rows if r.get("encoder") not in BASELINES]
    if not own_names:
        raise SelfsupError(
            f"{folder / EVAL_FILE} holds no rows of the run's own encoder; re-run "
            f"`selfsup evaluate {folder}`"
        )
    files = _run_files(folder)
    config, spec = _yaml(files / "config.yaml"), _yaml(files / "encoder.yaml")
    train = config.get("train") or {}
    encoder = spec.get("encoder") or {}
    steps = spec.get("step", train.get("max_steps"))
    info = {
        "run": label,
        "method": str(spec.get("method") or config.get("method") or own_names[0]),
        "encoder": str(encoder.get("name") or config.get("encoder") or "—"),
        "steps": "—" if steps is None else str(steps),
        "precision": str(train.get("precision") or "—"),
    }
    data = str(
        rows[0].get("data")  # written by `selfsup evaluate` since `compare` exists
        or (config.get("eval") or {}).get("data")
        or (config.get("data") or {}).get("name")
        or spec.get("data")
        or "unknown"
    )
    own = [r for r in rows if r.get("encoder") == own_names[0]]
    baselines = {name: [r for r in rows if r.get("encoder") == name] for name in BASELINE_TITLES}
    line = Line(label, [label], info, data, _by_column(own))
    return line, {name: rows for name, rows in baselines.items() if rows}


def _yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping, or {} when the file is absent."""
    from selfsup.config import load_yaml

    return load_yaml(path) if path.is_file() else {}


def _baseline_lines(
    evaluated: list[tuple[Line, dict[str, list[dict[str, Any]]]]],
) -> list[Line]:
    """One line per baseline, data set and architecture, shared by the runs whose numbers
    agree in every column they both have (else a line per group of agreeing runs)."""
    groups: list[Line] = []
    for name in BASELINE_TITLES:
        for run, baselines in evaluated:
            if name not in baselines:
                continue
            architecture = "" if name == "raw" else run.info["encoder"].strip("—")
            columns = _by_column(baselines[name])
            match = next(
                (
                    g
                    for g in groups
                    if g.label == _baseline_label(name, architecture)
                    and g.data == run.data
                    and _agree(g.columns, columns)
                ),
                None,
            )
            if match is None:
                info = {
                    "method": BASELINE_TITLES[name],
                    "encoder": architecture or "—",
                    "steps": "—",
                    "precision": "—",
                }
                label = _baseline_label(name, architecture)
                groups.append(Line(label, [], info, run.data, {}, baseline=True))
                match = groups[-1]
            match.runs.append(run.label)
            for column, rows in columns.items():
                match.columns.setdefault(column, rows)
    labels = [g.label for g in groups]
    for g in groups:
        g.info["run"] = ", ".join(g.runs)
        if labels.count(g.label) > 1:
            g.label = f"{g.label} · {g.info['run']}"
    return groups


def _baseline_label(name: str, architecture: str) -> str:
    """``random init (convnet)``: the baseline's title and the architecture it is of."""
    title = BASELINE_TITLES[name]
    return f"{title} ({architecture})" if architecture else title


def _agree(a: dict[str, list[dict[str, Any]]], b: dict[str, list[dict[str, Any]]]) -> bool:
    """True when every column both lines have shows the same cell."""
    return all(_cell(a[c]) == _cell(b[c]) for c in a.keys() & b.keys())


def _column(row: dict[str, Any]) -> tuple[tuple[Any, ...], str] | None:
    """The (sort key, header) of the table column a row belongs to, or None for rows the
    table does not show. The supervised reference goes into the finetune columns."""
    protocol = str(row.get("protocol"))
    if "label_fraction" in row:
        protocol = "finetune" if protocol == "supervised" else protocol
        rank = PROTOCOL_ORDER.index(protocol) if protocol in PROTOCOL_ORDER else len(PROTOCOL_ORDER)
        fraction = float(row["label_fraction"])
        return (0, rank, protocol, fraction), f"{protocol} {format_fraction(fraction)}"
    if protocol == "fewshot":
        way, shot = int(row["n_way"]), int(row["k_shot"])
        return (1, way, shot), f"{way}-way {shot}-shot"
    if protocol == "robustness":
        return (2,), "corrupted"
    return None


def _by_column(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by the header of their column, in first-seen order."""
    columns: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        placed = _column(row)
        if placed is not None:
            columns.setdefault(placed[1], []).append(row)
    return columns


def _ordered_columns(lines: list[Line]) -> list[str]:
    """Every column header of the lines: probes by protocol and label fraction, then
    few-shot settings, then the corrupted mean."""
    keys: dict[str, tuple[Any, ...]] = {}
    for line in lines:
        for header, rows in line.columns.items():
            keys[header] = _column(rows[0])[0]  # type: ignore[index]
    return sorted(keys, key=lambda header: keys[header])


def _cell(rows: list[dict[str, Any]]) -> str:
    """The text of one cell: accuracy ± std, few-shot ± 95% CI, or the mean corruption
    accuracy; "—" without rows."""
    if not rows:
        return "—"
    row = rows[0]
    if row.get("protocol") == "fewshot":
        return format_fewshot(row)
    if row.get("protocol") == "robustness":
        mean = [r for r in rows if r.get("corruption") == "mean"]
        return f"{100 * float(mean[0]['accuracy']):.1f}" if mean else "—"
    return format_accuracy(row["accuracy"], row["std"])


def comparison_figure(lines: list[Line]) -> Figure | None:
    """Label efficiency (accuracy vs label fraction, one line per run × protocol), few-shot
    accuracy vs shots, and mean corruption accuracy vs severity, one panel each where rows
    exist; baselines dashed. None when no line has any of them."""
    rows = [r for line in lines for r in line.rows]
    dashed = {line.label for line in lines if line.baseline}
    panels = [
        (draw_label_efficiency, bool(label_efficiency_rows(rows))),
        (_draw_fewshot, any(r["protocol"] == "fewshot" for r in rows)),
        (_draw_severity, any(r["protocol"] == "robustness" for r in rows)),
    ]
    present = [draw for draw, has_rows in panels if has_rows]
    if not present:
        return None
    fig = Figure(figsize=(6.5 * len(present), 4.6), layout="constrained")
    for i, draw in enumerate(present):
        draw(fig.add_subplot(1, len(present), i + 1), rows, dashed)
    return fig


def _draw_fewshot(ax: Any, rows: list[dict[str, Any]], dashed: set[str]) -> None:
    """Few-shot accuracy (%) vs K shots, one line per encoder and N ways, ± 95% CI."""
    shots = [r for r in rows if r["protocol"] == "fewshot"]
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    for encoder in dict.fromkeys(r["encoder"] for r in shots):
        for way in sorted({r["n_way"] for r in shots if r["encoder"] == encoder}):
            line = sorted(
                (r for r in shots if r["encoder"] == encoder and r["n_way"] == way),
                key=lambda r: r["k_shot"],
            )
            draw_curve(
                ax,
                [(r["k_shot"], 100 * r["accuracy"], 100 * r["ci95"]) for r in line],
                label=f"{encoder} · {way}-way",
                colour=encoders.index(encoder),
                dashed=encoder in dashed,
            )
    ks = sorted({r["k_shot"] for r in shots})
    finish_log_axes(
        ax,
        ks,
        [str(k) for k in ks],
        "labelled samples per class (K-shot)",
        "few-shot accuracy (%)",
    )


def _draw_severity(ax: Any, rows: list[dict[str, Any]], dashed: set[str]) -> None:
    """Accuracy (%) of the clean linear probe vs severity, averaged over the corruptions."""
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    for encoder in dict.fromkeys(r["encoder"] for r in rows if r["protocol"] == "robustness"):
        xs, ys = severity_curve(rows, encoder)
        ax.plot(
            xs,
            ys,
            marker="o",
            color=f"C{encoders.index(encoder) % 10}",
            linestyle="--" if encoder in dashed else "-",
            label=encoder,
        )
    ax.set_xlabel("corruption severity (0 = clean)")
    ax.set_ylabel("accuracy (%), mean over corruptions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def write_comparison(comparison: Comparison, out: Path) -> list[Path]:
    """Write compare.md, compare.png (when there is something to plot) and a self-contained
    compare.html into ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "compare.md"]
    written[0].write_text(comparison.markdown() + "\n", encoding="utf-8")
    fig = comparison.figure()
    image = ""
    if fig is not None:
        uri = figure_to_data_uri(fig)
        written.append(out / "compare.png")
        written[-1].write_bytes(base64.b64decode(uri.split(",", 1)[1]))
        image = f'<img alt="comparison" src="{uri}">'
    head, body = comparison.table()
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in body
    )
    note = f"<p>{html.escape(comparison.note)}</p>" if comparison.note else ""
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>selfsup compare</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>selfsup compare</h1>\n{note}<table><thead><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + f"</tr></thead><tbody>{cells}</tbody></table>\n<p>{html.escape(LEGEND)}</p>\n"
        f"{image}\n</body>\n</html>\n"
    )
    written.append(out / "compare.html")
    written[-1].write_text(page, encoding="utf-8")
    return written
