"""benchmarks/pairs_table.py: the image–text tables from run folders."""

from __future__ import annotations

import json

import pytest
import yaml


@pytest.fixture
def bench(import_benchmark):
    return import_benchmark("pairs_table")


def fake_run(folder, method, data, *, loss, r1, zero_shot, linear):
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({"method": method, "data": {"name": data}}))
    (folder / "metrics.csv").write_text(f"loss,step\n9.0,10\n{loss},300\n,300\n")
    retrieval = {
        f"{d}_r{k}": r1 * k for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)
    }
    (folder / "retrieval.json").write_text(
        json.dumps(
            [
                {"encoder": method, **retrieval},
                {"encoder": "random-init", **dict.fromkeys(retrieval, 0.07)},
            ]
        )
    )
    common = {"chance": 100 / 22, "majority": 27.4}
    (folder / "zero_shot.json").write_text(
        json.dumps(
            [
                {
                    "encoder": method,
                    "zero_shot_accuracy": zero_shot,
                    "zero_shot_balanced_accuracy": 9.0,
                    **common,
                },
                {"encoder": "tf-idf caption → class name", "zero_shot_accuracy": 4.1, **common},
            ]
        )  # fmt: skip
    )
    rows = [
        {"encoder": e, "protocol": p, "label_fraction": f, "accuracy": a}
        for e, a in ((method, linear), ("random-init", 0.5), ("raw", 0.4))
        for p in ("linear", "knn")
        for f in (0.1, 1.0)
    ]
    (folder / "eval.json").write_text(json.dumps(rows))
    (folder.parent / f"{folder.name}.log").write_text(
        "\tElapsed (wall clock) time (h:mm:ss or m:ss): 6:33.88\n"
    )
    return folder


def test_tables_name_each_runs_captions_and_keep_small_recalls_readable(bench, tmp_path):
    clip = fake_run(
        tmp_path / "clip",
        "clip",
        "openclipart-pairs",
        loss=1.61,
        r1=8.7,
        zero_shot=2.1,
        linear=0.616,
    )
    kept = fake_run(
        tmp_path / "kept",
        "siglip",
        "openclipart-pairs-kept",
        loss=3.2,
        r1=5.0,
        zero_shot=31.0,
        linear=0.6,
    )
    simclr = tmp_path / "simclr"
    simclr.mkdir()
    (simclr / "config.yaml").write_text(
        yaml.safe_dump({"method": "simclr", "data": {"name": "openclipart"}})
    )
    (simclr / "eval.json").write_text(
        json.dumps(
            [{"encoder": "simclr", "protocol": "linear", "label_fraction": 1.0, "accuracy": 0.63}]
        )
    )
    retrieval = bench.retrieval_table([clip, kept])
    assert (
        retrieval[2]
        == "| `clip` (clip, openclipart-pairs) | 300 | 1.61 | 8.7 | 43.5 | 87.0 | 8.7 | 43.5 | 87.0 | 6:33 |"
    )
    assert retrieval[-1].startswith("| random init | | | 0.07 | 0.07 |")
    zero = bench.zero_shot_table([clip, kept])
    assert "| `kept` (siglip) | openclipart-pairs-kept | 31.0 | 9.0 |" in zero
    # the TF-IDF baseline reads each run's own captions: one row per caption set
    assert "| tf-idf caption → class name | openclipart-pairs | 4.1 | – |" in zero
    assert "| tf-idf caption → class name | openclipart-pairs-kept | 4.1 | – |" in zero
    assert zero[-2:] == ["| chance | | 4.5 | 4.5 |", "| majority class | | 27.4 | 4.5 |"]
    probes = bench.probe_table([clip, kept], simclr)
    assert "| `simclr` (simclr, openclipart) | – | 63.0 | – | – |" in probes
    assert probes[-2:] == [
        "| random init | 50.0 | 50.0 | 50.0 | 50.0 |",
        "| raw pixels | 40.0 | 40.0 | 40.0 | 40.0 |",
    ]
