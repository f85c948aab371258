"""A run's `report.html`: one self-contained page that opens offline.

Figures are drawn with matplotlib's Agg canvas and inlined as base64 PNG; the CSS is
inline; there are no scripts and no external URLs. Every section is optional: a figure
whose data is missing is replaced by a one-line note.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from selfsup.errors import SelfsupError
from selfsup.evaluate.protocol import accuracy_grid, format_fraction, label_efficiency_rows
from selfsup.evaluate.robustness import robustness_figure

Series = tuple[np.ndarray, np.ndarray]  # (steps (S,), values (S,))

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em;
     border-bottom: 1px solid #ddd; padding-bottom: .2em; }
img { max-width: 100%; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: .35em .9em; border-bottom: 1px solid #e4e4e4; }
th { background: #f5f5f5; text-align: left; } td.num { text-align: right;
     font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: .9em; }
p.missing { color: #888; font-style: italic; }
"""


def read_metrics_csv(path: str | Path) -> dict[str, Series]:
    """Read a CSVLogger `metrics.csv` into column -> (steps, values), skipping gaps.

    Rows without a number in a column are left out of that column's series; the step is
    the `step` column when present and numeric, else the row index. Non-numeric columns
    disappear.

    Args:
        path: the CSV file; header row first.

    Returns:
        {column: (steps (S,), values (S,))} for every column with at least one number,
        `step` itself excluded.
    """
    with open(path, newline="") as f:
        records = list(csv.DictReader(f))
    parsed = [_to_float(r.get("step")) for r in records]
    steps = [float(i) if s is None else s for i, s in enumerate(parsed)]
    series: dict[str, tuple[list[float], list[float]]] = {}
    for step, record in zip(steps, records, strict=True):
        for column, cell in record.items():
            value = _to_float(cell)
            if column is None or column == "step" or value is None:
                continue
            xs, ys = series.setdefault(column, ([], []))
            xs.append(step)
            ys.append(value)
    return {c: (np.asarray(xs), np.asarray(ys)) for c, (xs, ys) in series.items()}


def _to_float(cell: Any) -> float | None:
    """The number in a CSV cell, or None when it is empty, text, NaN or Inf."""
    if cell is None or isinstance(cell, list):
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def figure_to_data_uri(fig: Figure) -> str:
    """Render a figure with the Agg canvas as `data:image/png;base64,...`."""
    canvas = FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def curves_figure(metrics: dict[str, Series], panels: Sequence[tuple[str, str]]) -> Figure | None:
    """One panel per (column, y-label) present in metrics, plotted against step.

    Returns None when none of the columns has data.
    """
    present = [(c, label) for c, label in panels if c in metrics and metrics[c][0].size]
    if not present:
        return None
    fig = Figure(figsize=(5.0 * len(present), 3.4), layout="constrained")
    for i, (column, label) in enumerate(present):
        ax = fig.add_subplot(1, len(present), i + 1)
        steps, values = metrics[column]
        ax.plot(steps, values, linewidth=1.0, marker="o" if steps.size < 30 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    return fig


BASELINES = frozenset({"random-init", "raw", "supervised"})
"""The encoders every evaluation adds beside the evaluated one; plots draw them dashed."""

PROTOCOL_MARKERS = {"linear": "o", "knn": "s", "finetune": "^", "supervised": "^", "lora": "D"}
"""The marker of each protocol's line in the label-efficiency plot ("v" for any other)."""


def label_efficiency_figure(rows: list[dict[str, Any]]) -> Figure | None:
    """Accuracy (%) vs label fraction (`draw_label_efficiency`), the baselines dashed.
    Returns None without rows."""
    rows = label_efficiency_rows(rows)
    if not rows:
        return None
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    draw_label_efficiency(fig.add_subplot(1, 1, 1), rows, dashed=BASELINES)
    return fig


def draw_label_efficiency(ax: Any, rows: list[dict[str, Any]], dashed: Collection[str]) -> None:
    """Accuracy (%) vs label fraction on a log x-axis into the matplotlib axes ``ax``: one
    line per encoder × protocol, a colour per encoder, a marker per protocol, error bars =
    std over seeds; the encoders named in ``dashed`` (baselines) drawn dashed."""
    rows = label_efficiency_rows(rows)
    lines: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        lines.setdefault((str(r["encoder"]), str(r["protocol"])), []).append(r)
    encoders = list(dict.fromkeys(e for e, _ in lines))
    for (encoder, protocol), line in lines.items():
        line = sorted(line, key=lambda r: float(r["label_fraction"]))
        draw_curve(
            ax,
            [(float(r["label_fraction"]), 100 * r["accuracy"], 100 * r["std"]) for r in line],
            label=f"{encoder} · {protocol}",
            colour=encoders.index(encoder),
            dashed=encoder in dashed,
            marker=PROTOCOL_MARKERS.get(protocol, "v"),
        )
    fractions = sorted({float(r["label_fraction"]) for r in rows})
    finish_log_axes(
        ax,
        fractions,
        [format_fraction(f) for f in fractions],
        "labelled training samples",
        "test accuracy (%)",
    )


def draw_curve(
    ax: Any,
    points: list[tuple[float, float, float]],
    *,
    label: str,
    colour: int,
    dashed: bool,
    marker: str = "o",
) -> None:
    """One curve of (x, y, error bar) points into ``ax``, in the colour ``C{colour}``."""
    xs, ys, errors = zip(*points, strict=True)
    ax.errorbar(
        xs,
        ys,
        yerr=errors,
        marker=marker,
        capsize=3,
        color=f"C{colour % 10}",
        linestyle="--" if dashed else "-",
        label=label,
    )


def finish_log_axes(
    ax: Any, ticks: Sequence[float], names: Sequence[str], xlabel: str, ylabel: str
) -> None:
    """A log x-axis ticked only at ``ticks`` (named ``names``), the labels, grid and legend."""
    ax.set_xscale("log")
    ax.set_xticks(ticks, names)
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def tsne_embedding(
    embeddings: np.ndarray, max_points: int = 2000, seed: int = 0, max_iter: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE (sklearn, PCA init) of at most max_points rows drawn with `seed`.

    Rows are subsampled without replacement, reduced to 50 dimensions by PCA when
    D > 50, then mapped with perplexity min(30, (n - 1) / 3). Runs on one thread: for
    ≤ 2,000 points OpenMP/BLAS threads cost more than they give (on a busy 2-core machine
    150 points take 12 s with them and 0.5 s without).

    Args:
        embeddings: (N, D) features, N ≥ 4.

    Returns:
        points (n, 2) and the (n,) row indices they come from.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(embeddings, dtype=np.float32)
    rng = np.random.default_rng(seed)
    idx = np.arange(x.shape[0])
    if x.shape[0] > max_points:
        idx = np.sort(rng.choice(x.shape[0], size=max_points, replace=False))
    x = x[idx]  # (n, D)
    with threadpool_limits(1):
        if x.shape[1] > 50:
            x = PCA(n_components=min(50, x.shape[0]), random_state=seed).fit_transform(x)
        tsne = TSNE(
            n_components=2,
            perplexity=min(30.0, (x.shape[0] - 1) / 3),
            init="pca",
            max_iter=max_iter,
            random_state=seed,
            n_jobs=1,
        )
        points = tsne.fit_transform(x)  # (n, 2)
    return points, idx


def tsne_figure(
    embeddings: np.ndarray,
    labels: np.ndarray | None,
    class_names: list[str] | None,
    max_points: int = 2000,
    seed: int = 0,
) -> Figure | None:
    """Scatter of `tsne_embedding` coloured by label, legend by class name.

    Returns None with fewer than 4 embeddings (t-SNE needs perplexity ≥ 1).
    """
    if embeddings.ndim != 2 or embeddings.shape[0] < 4:
        return None
    points, idx = tsne_embedding(embeddings, max_points=max_points, seed=seed)  # (n, 2)
    fig = Figure(figsize=(7.5, 6.0), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7)
    else:
        sub = np.asarray(labels)[idx]
        classes = np.unique(sub)
        cmap = _class_colormap(len(classes))
        for i, c in enumerate(classes):
            mask = sub == c
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=6,
                alpha=0.8,
                color=cmap(i),
                label=_class_name(c, class_names),
            )
        ax.legend(
            fontsize="small",
            markerscale=2.5,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            ncol=1 if len(classes) <= 20 else 2,
            frameon=False,
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {points.shape[0]} test embeddings")
    return fig


def _class_colormap(num_classes: int) -> Any:
    """A qualitative colormap for up to 20 classes, a continuous one beyond."""
    from matplotlib import colormaps

    if num_classes <= 10:
        return colormaps["tab10"]
    if num_classes <= 20:
        return colormaps["tab20"]
    return colormaps["turbo"].resampled(num_classes)


def _class_name(label: Any, class_names: list[str] | None) -> str:
    """class_names[label] when it exists, else the label itself as text."""
    if class_names is not None and isinstance(label, (int, np.integer)):
        if 0 <= int(label) < len(class_names):
            return str(class_names[int(label)])
    return str(label)


def rows_html(rows: list[dict[str, Any]]) -> str:
    """The evaluation rows as an HTML table: one line per (encoder, protocol), one
    column per label fraction, cells "88.1 ± 0.3" (percent)."""
    fractions, cells = accuracy_grid(rows)
    head = "".join(f"<th>{format_fraction(f)} labels</th>" for f in fractions)
    body = []
    for (encoder, protocol), line in cells.items():
        values = "".join(f'<td class="num">{line.get(f, "—")}</td>' for f in fractions)
        names = f"<td>{html.escape(encoder)}</td><td>{html.escape(protocol)}</td>"
        body.append(f"<tr>{names}{values}</tr>")
    return (
        f"<table><thead><tr><th>encoder</th><th>protocol</th>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def write_report(
    path: str | Path,
    *,
    title: str,
    rows: list[dict[str, Any]],
    metrics_csv: Path | None,
    embeddings: np.ndarray | None = None,
    embedding_labels: np.ndarray | None = None,
    class_names: list[str] | None = None,
    config_text: str | None = None,
) -> Path:
    """Write the run's self-contained HTML report and return its path.

    Sections: training curves (loss, lr vs step), collapse metrics (rankme, emb_std vs
    step), label efficiency, a t-SNE map of the test embeddings, the evaluation table,
    the config. Any of them may lack data.

    Args:
        path: the HTML file to write; its folder is created.
        title: page heading.
        rows: result rows of `evaluate_features` (may be empty).
        metrics_csv: the run's metrics.csv, or None; a missing file is noted, not fatal.
        embeddings: (N, D) test embeddings; labels (N,) colour them; class_names[label]
            names the legend entries.
        config_text: the run's config.yaml text, shown verbatim.
    """
    if embeddings is not None and embedding_labels is not None:
        if len(embedding_labels) != len(embeddings):
            raise SelfsupError(
                f"report got {len(embeddings)} embeddings but {len(embedding_labels)} labels; "
                "pass one label per embedding row"
            )
    metrics = _load_metrics(metrics_csv)
    sections = [
        _figure_section(
            "Training curves",
            curves_figure(metrics, [("loss", "loss"), ("lr", "learning rate")]),
            "no loss or learning-rate columns in metrics.csv",
        ),
        _figure_section(
            "Collapse monitor",
            curves_figure(
                metrics, [("rankme", "effective rank (RankMe)"), ("emb_std", "embedding std")]
            ),
            "no rankme or emb_std columns in metrics.csv",
        ),
        _figure_section("Label efficiency", label_efficiency_figure(rows), "no evaluation results"),
        *(
            [_figure_section("Robustness to corruptions", robustness_figure(rows), "")]
            if any(r.get("protocol") == "robustness" for r in rows)
            else []
        ),
        _figure_section(
            "Test embeddings (t-SNE)",
            None
            if embeddings is None
            else tsne_figure(np.asarray(embeddings), embedding_labels, class_names),
            "no embeddings given (at least 4 are needed)",
        ),
        "<h2>Evaluation</h2>"
        + (rows_html(rows) if rows else '<p class="missing">no evaluation results</p>'),
    ]
    if config_text is not None:
        sections.append(f"<h2>Config</h2><pre>{html.escape(config_text)}</pre>")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _load_metrics(metrics_csv: Path | None) -> dict[str, Series]:
    """read_metrics_csv, or {} when there is no file."""
    if metrics_csv is None or not Path(metrics_csv).is_file():
        return {}
    return read_metrics_csv(metrics_csv)


def _figure_section(heading: str, fig: Figure | None, missing: str) -> str:
    """An <h2> with the figure inlined, or a note saying what data was missing."""
    if fig is None:
        return f'<h2>{heading}</h2><p class="missing">{missing}</p>'
    return f'<h2>{heading}</h2><img alt="{heading}" src="{figure_to_data_uri(fig)}">'
