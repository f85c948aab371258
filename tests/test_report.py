"""The HTML report is self-contained and survives missing data."""

import re

import numpy as np
import pytest
from eval_rows import robustness_rows

from selfsup.errors import SelfsupError
from selfsup.evaluate.report import read_metrics_csv, write_report

ROWS = [
    {
        "encoder": enc,
        "protocol": proto,
        "label_fraction": f,
        "accuracy": acc,
        "std": std,
        "seeds": 3 if f < 1 else 1,
        "num_train": int(f * 1000),
        "num_test": 200,
    }
    for enc, base in [("simclr", 0.8), ("random-init", 0.4)]
    for proto in ("linear", "knn")
    for f, acc, std in [(0.01, base - 0.2, 0.021), (0.1, base - 0.05, 0.004), (1.0, base, 0.0)]
]

CSV = """step,loss,lr,samples_per_s,rankme,emb_std
0,5.0,0.0,,,
1,4.5,0.1,300.5,,
2,4.1,0.2,310.0,12.5,0.08
3,,,,,
4,3.2,0.15,305.0,14.0,0.07
"""


def assert_self_contained(text: str) -> None:
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<script\b", text, re.I)
    assert not re.search(r"<link\b", text, re.I)
    assert not re.search(r"""src=["'](?!data:)""", text)


@pytest.fixture(scope="module")
def embeddings():
    rng = np.random.default_rng(0)
    labels = np.arange(150) % 3
    centres = rng.normal(size=(3, 64)) * 4
    return centres[labels] + rng.normal(size=(150, 64)), labels


def test_full_report(tmp_path, embeddings):
    (tmp_path / "metrics.csv").write_text(CSV)
    z, labels = embeddings
    path = write_report(
        tmp_path / "out" / "report.html",
        title="simclr on <digits>",
        rows=ROWS,
        metrics_csv=tmp_path / "metrics.csv",
        embeddings=z,
        embedding_labels=labels,
        class_names=["zero", "one", "two"],
        config_text="method: simclr\nlr: 0.3 # <tuned>",
    )
    text = path.read_text(encoding="utf-8")
    assert_self_contained(text)
    assert text.count('src="data:image/png;base64,') == 4  # curves, collapse, efficiency, t-SNE
    for cell in ["60.0 ± 2.1", "75.0 ± 0.4", "80.0 ± 0.0", "20.0 ± 2.1", "random-init"]:
        assert cell in text
    assert "simclr on &lt;digits&gt;" in text
    assert "<pre>method: simclr\nlr: 0.3 # &lt;tuned&gt;</pre>" in text


def test_report_without_metrics_or_embeddings(tmp_path):
    path = write_report(
        tmp_path / "report.html", title="bare", rows=[], metrics_csv=tmp_path / "absent.csv"
    )
    text = path.read_text(encoding="utf-8")
    assert_self_contained(text)
    assert "data:image/png;base64" not in text
    assert "no evaluation results" in text


def test_report_with_partial_metrics(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,loss,epoch\n0,1.0,0\n5,0.5,\n")
    path = write_report(
        tmp_path / "report.html", title="t", rows=ROWS[:3], metrics_csv=tmp_path / "metrics.csv"
    )
    text = path.read_text(encoding="utf-8")
    assert_self_contained(text)
    assert text.count("data:image/png;base64,") == 2  # loss curve and label efficiency
    assert "no rankme or emb_std columns" in text


def test_read_metrics_csv_skips_empty_cells(tmp_path):
    (tmp_path / "metrics.csv").write_text(CSV)
    metrics = read_metrics_csv(tmp_path / "metrics.csv")
    assert set(metrics) == {"loss", "lr", "samples_per_s", "rankme", "emb_std"}
    steps, values = metrics["rankme"]
    assert steps.tolist() == [2.0, 4.0] and values.tolist() == [12.5, 14.0]
    assert metrics["loss"][0].tolist() == [0.0, 1.0, 2.0, 4.0]


def test_mismatched_labels_raise(tmp_path, embeddings):
    z, labels = embeddings
    with pytest.raises(SelfsupError, match="one label per embedding"):
        write_report(
            tmp_path / "r.html",
            title="t",
            rows=[],
            metrics_csv=None,
            embeddings=z,
            embedding_labels=labels[:-1],
        )


def test_report_plots_accuracy_against_severity(tmp_path):
    """Deliverable of the robustness protocol: report.html has a panel per corruption with
    accuracy against severity, severity 0 being the clean accuracy."""
    from selfsup.evaluate.robustness import robustness_figure, severity_curve

    drops = {"gaussian_noise": 0.1, "blur": 0.02}
    rows = robustness_rows("simclr", 0.8, drops) + robustness_rows("raw", 0.6, drops)
    path = write_report(tmp_path / "report.html", title="t", rows=ROWS + rows, metrics_csv=None)
    text = path.read_text(encoding="utf-8")
    assert_self_contained(text)
    section = text.split("<h2>Robustness to corruptions</h2>")[1].split("<h2>")[0]
    assert section.startswith('<img alt="Robustness to corruptions" src="data:image/png;base64,')
    fig = robustness_figure(rows)
    assert [ax.get_title() for ax in fig.axes] == ["gaussian_noise", "blur"]
    assert all(ax.get_xlabel() == "severity" for ax in fig.axes)
    noise = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(noise["simclr"].get_xdata()) == [0, 1, 2, 3, 4, 5]
    assert noise["simclr"].get_ydata() == pytest.approx([80, 70, 60, 50, 40, 30])
    assert noise["raw"].get_ydata() == pytest.approx([60, 50, 40, 30, 20, 10])
    # the mean over corruptions, as `selfsup compare` plots it
    assert severity_curve(rows, "raw")[1] == pytest.approx([60, 54, 48, 42, 36, 30])
    assert severity_curve(rows, "absent") == ([], [])
