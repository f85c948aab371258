"""`selfsup compare`: runs' eval.json rows side by side, one table and one figure; baselines
shared only where they agree; bad inputs give one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from eval_rows import robustness_rows

from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.evaluate.compare import compare_runs

KINDS = ("gaussian_noise", "blur")


def probe_rows(encoder: str, accuracy: float, data: str) -> list[dict[str, Any]]:
    """Linear and kNN at 10% and 100% of the labels, as `evaluate_features` writes them."""
    return [
        {
            "encoder": encoder,
            "protocol": protocol,
            "label_fraction": fraction,
            "accuracy": accuracy
            - (0.1 if fraction < 1 else 0.0)
            - (0.02 if protocol == "knn" else 0),
            "std": 0.012 if fraction < 1 else 0.0,
            "seeds": 3 if fraction < 1 else 1,
            "num_train": 100,
            "num_test": 50,
            "data": data,
        }
        for protocol in ("linear", "knn")
        for fraction in (0.1, 1.0)
    ]


def fewshot_and_robustness_rows(encoder: str, accuracy: float, data: str) -> list[dict[str, Any]]:
    """5-way 1- and 5-shot rows and a robustness suite whose accuracy falls 4 points per
    severity (gaussian noise) or 2 (blur), as `fewshot_rows` and `robustness_rows` write."""
    rows: list[dict[str, Any]] = [
        {
            "encoder": encoder,
            "protocol": "fewshot",
            "n_way": 5,
            "k_shot": k,
            "queries": 15,
            "episodes": 600,
            "accuracy": accuracy - 0.2 + 0.03 * k,
            "ci95": 0.008,
            "std": 0.1,
            "seed": 0,
            "data": data,
        }
        for k in (1, 5)
    ]
    drops = dict(zip(KINDS, (0.04, 0.02), strict=True))
    return [*rows, *robustness_rows(encoder, accuracy, drops, data=data)]


def write_run(
    folder: Path,
    method: str,
    accuracy: float,
    *,
    data: str = "digits",
    random_init: float = 0.5,
    steps: int = 200,
    config: bool = True,
) -> Path:
    """A run folder as `selfsup pretrain` + `selfsup evaluate --protocol fewshot --protocol
    robustness --protocol supervised` leave it: config.yaml, encoder.yaml, eval.json."""
    folder.mkdir(parents=True)
    if config:
        cfg = {
            "method": method,
            "encoder": "convnet",
            "train": {"max_steps": steps, "precision": "32-true"},
        }
        (folder / "config.yaml").write_text(yaml.safe_dump({**cfg, "data": {"name": data}}))
    spec = {"encoder": {"name": "convnet", "width": 8}, "method": method, "step": steps}
    (folder / "encoder.yaml").write_text(yaml.safe_dump(spec))
    rows = []
    for encoder, acc in [(method, accuracy), ("random-init", random_init), ("raw", 0.6)]:
        rows += probe_rows(encoder, acc, data)
    supervised = {**probe_rows("supervised", 0.9, data)[1], "protocol": "supervised"}
    for encoder, acc in [(method, accuracy), ("random-init", random_init), ("raw", 0.6)]:
        rows += fewshot_and_robustness_rows(encoder, acc, data)
    (folder / "eval.json").write_text(json.dumps([*rows, supervised]))
    return folder


def cells(markdown: str) -> dict[str, dict[str, str]]:
    """The markdown table as {first cell + method: {header: cell}}."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    table = {}
    for line in lines[1:]:
        row = dict(zip(head, (c.strip() for c in line.strip("|").split("|")), strict=True))
        table[f"{row['run']} / {row['method']}"] = row
    return table


def test_runs_on_one_data_set_share_their_baselines(tmp_path) -> None:
    a = write_run(tmp_path / "a", "simclr", 0.8)
    b = write_run(tmp_path / "b", "vicreg", 0.85, steps=300)
    comparison = compare_runs([a, b])
    text = comparison.markdown()
    table = cells(text)
    assert list(table) == [
        "a / simclr",
        "b / vicreg",
        "a, b / random init",
        "a, b / raw input",
        "a, b / supervised reference",
    ]
    assert comparison.note is None and "data" not in table["a / simclr"]
    assert table["a / simclr"]["encoder"] == "convnet" and table["b / vicreg"]["steps"] == "300"
    assert table["a / simclr"]["precision"] == "32-true"
    assert table["a / simclr"]["linear 10%"] == "70.0 ± 1.2"
    assert table["b / vicreg"]["knn 100%"] == "83.0 ± 0.0"
    assert table["a / simclr"]["5-way 1-shot"] == "63.0 ± 0.8"
    assert table["b / vicreg"]["5-way 5-shot"] == "80.0 ± 0.8"
    # the mean corruption accuracy: clean 80, minus 4 × 3 and 2 × 3 points on average
    assert table["a / simclr"]["corrupted"] == "71.0"
    assert table["a, b / random init"]["linear 100%"] == "50.0 ± 0.0"
    # the supervised reference sits in the finetune column, which the runs do not fill
    assert table["a, b / supervised reference"]["finetune 100%"] == "90.0 ± 0.0"
    assert table["a / simclr"]["finetune 100%"] == "—"
    headers = text.splitlines()[0]
    assert headers.index("linear 10%") < headers.index("linear 100%") < headers.index("knn 10%")
    assert (
        headers.index("finetune 100%") < headers.index("5-way 1-shot") < headers.index("corrupted")
    )


def test_different_data_sets_are_said_and_keep_their_own_baselines(tmp_path) -> None:
    a = write_run(tmp_path / "a", "simclr", 0.8)
    b = write_run(tmp_path / "b", "simclr", 0.7, data="fashion-mnist")
    comparison = compare_runs([a, b])
    text = comparison.markdown()
    assert text.splitlines()[0] == comparison.note
    assert "different data sets (a: digits; b: fashion-mnist)" in comparison.note
    table = cells(text)
    assert (
        table["a / simclr"]["data"] == "digits" and table["b / simclr"]["data"] == "fashion-mnist"
    )
    assert {"a / raw input", "b / raw input", "a / random init", "b / random init"} <= set(table)
    assert table["b / raw input"]["data"] == "fashion-mnist"


def test_baselines_that_disagree_are_not_merged(tmp_path) -> None:
    """Same data, same architecture name, but another random init (e.g. another width)."""
    a = write_run(tmp_path / "a", "simclr", 0.8, random_init=0.5)
    b = write_run(tmp_path / "b", "byol", 0.8, random_init=0.45)
    lines = {line.label: line for line in compare_runs([a, b]).lines}
    assert "random init (convnet) · a" in lines and "random init (convnet) · b" in lines
    assert lines["raw input"].runs == ["a", "b"]


def test_the_figure_has_label_efficiency_fewshot_and_severity_panels(tmp_path) -> None:
    a = write_run(tmp_path / "a", "simclr", 0.8)
    b = write_run(tmp_path / "b", "vicreg", 0.85)
    comparison = compare_runs([a, b], out=tmp_path / "out")
    assert [p.name for p in comparison.written] == ["compare.md", "compare.png", "compare.html"]
    png = (tmp_path / "out" / "compare.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert (tmp_path / "out" / "compare.md").read_text().strip() == comparison.markdown()
    page = (tmp_path / "out" / "compare.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and 'src="data:image/png;base64,' in page
    assert "http" not in page and "<td>71.0</td>" in page

    efficiency, fewshot, severity = comparison.figure().axes
    styles = {c.get_label(): c.lines[0].get_linestyle() for c in efficiency.containers}
    assert styles["a · linear"] == "-" and styles["raw input · knn"] == "--"
    assert {c.get_label() for c in fewshot.containers} >= {"a · 5-way", "raw input · 5-way"}
    curves = {line.get_label(): line for line in severity.get_lines()}
    assert set(curves) == {"a", "b", "random init (convnet)", "raw input"}
    assert list(curves["a"].get_xdata()) == [0, 1, 2, 3, 4, 5]
    # severity 0 is the clean accuracy, then the mean of the two corruptions' drops
    assert curves["a"].get_ydata() == pytest.approx([80, 77, 74, 71, 68, 65])
    assert curves["raw input"].get_linestyle() == "--"


def test_a_folder_written_by_evaluate_out_compares_without_its_run_files(tmp_path) -> None:
    a = write_run(tmp_path / "a", "simclr", 0.8, config=False)
    (a / "encoder.yaml").unlink()
    line = compare_runs([a / "eval.json"]).lines[0]
    assert line.info == {
        "run": "a",
        "method": "simclr",
        "encoder": "—",
        "steps": "—",
        "precision": "—",
    }
    assert line.data == "digits"


def test_an_evaluation_inside_a_run_folder_takes_the_runs_description(tmp_path) -> None:
    """`selfsup evaluate RUN --out RUN/eval-robust`: the table names it run/eval-robust and
    reads method, encoder and steps from the run folder above."""
    run = write_run(tmp_path / "run", "simclr", 0.8)
    (run / "eval-robust").mkdir()
    (run / "eval.json").rename(run / "eval-robust" / "eval.json")
    line = compare_runs([run / "eval-robust"]).lines[0]
    assert line.label == "run/eval-robust"
    assert (line.info["method"], line.info["encoder"], line.info["steps"]) == (
        "simclr",
        "convnet",
        "200",
    )


def test_bad_inputs_are_one_line_errors(tmp_path) -> None:
    good = write_run(tmp_path / "good", "simclr", 0.8)
    with pytest.raises(SelfsupError, match="does not exist"):
        compare_runs([good, tmp_path / "absent"])
    (tmp_path / "plain").mkdir()
    with pytest.raises(SelfsupError, match="is not a run folder"):
        compare_runs([good, tmp_path / "plain"])
    unevaluated = tmp_path / "unevaluated"
    unevaluated.mkdir()
    (unevaluated / "config.yaml").write_text("method: simclr\n")
    with pytest.raises(SelfsupError, match="has no evaluation yet: run `selfsup evaluate"):
        compare_runs([good, unevaluated])
    (unevaluated / "eval.json").write_text("[{")
    with pytest.raises(SelfsupError, match="not valid JSON"):
        compare_runs([good, unevaluated])
    (unevaluated / "eval.json").write_text("[]")
    with pytest.raises(SelfsupError, match="holds no rows"):
        compare_runs([good, unevaluated])
    (unevaluated / "eval.json").write_text(json.dumps(probe_rows("raw", 0.6, "digits")))
    with pytest.raises(SelfsupError, match="no rows of the run's own encoder"):
        compare_runs([good, unevaluated])
    with pytest.raises(SelfsupError, match="given twice"):
        compare_runs([good, tmp_path / "good" / "eval.json"])


def test_cli_prints_the_table_and_exits_2_on_bad_input(tmp_path, capsys) -> None:
    a = write_run(tmp_path / "a", "simclr", 0.8)
    b = write_run(tmp_path / "b", "vicreg", 0.85)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| a | simclr | convnet | 200 | 32-true |" in out
    assert f"wrote {tmp_path / 'cmp' / 'compare.md'}" in out
    assert main(["compare", str(a), str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "does not exist" in err[0]


def test_two_evaluated_exports_share_the_random_init_of_their_architecture(tmp_path) -> None:
    """End to end: `evaluate_run` writes the data set into every row, and two encoders of the
    same architecture (different weights) get the same random-init and raw baselines."""
    from selfsup.config import EvalConfig
    from selfsup.encoders import build_encoder
    from selfsup.evaluate.run import evaluate_run
    from selfsup.export import export_encoder

    ev = EvalConfig(
        protocols=("knn",),  # the linear probe's weight-decay search is the slow part
        label_fractions=(0.1, 1.0),
        seeds=(0,),
        max_train=200,
        report=False,
    )
    for seed, method in [(1, "alpha"), (2, "beta")]:
        torch.manual_seed(seed)
        encoder = build_encoder("convnet", in_channels=1, image_size=8, width=4)
        export_encoder(encoder, tmp_path / method, image_size=8, channels=1, method=method)
        rows = evaluate_run(tmp_path / method, "digits", eval_cfg=ev)
        assert {r["data"] for r in rows} == {"digits"}
    comparison = compare_runs([tmp_path / "alpha", tmp_path / "beta"])
    labels = [line.label for line in comparison.lines]
    assert labels == ["alpha", "beta", "random init (convnet)", "raw input"]
    assert comparison.lines[2].runs == ["alpha", "beta"]
    assert comparison.columns == ["knn 10%", "knn 100%"]
