"""benchmarks/side_by_side.py: spec files, seed groups and the table, on a tiny data set."""

from __future__ import annotations

import pytest


@pytest.fixture
def bench(import_benchmark):
    return import_benchmark("side_by_side")


def test_malformed_spec_lines_are_refused_with_their_line(bench, tmp_path):
    spec = tmp_path / "spec.txt"
    spec.write_text("# a comment\n\na fashion-mnist-simclr 10\nb fashion-mnist-simclr ten\n")
    with pytest.raises(SystemExit, match=r"spec.txt:4: want NAME CONFIG STEPS"):
        bench.read_spec(spec)
    spec.write_text("a fashion-mnist-simclr 10\na fashion-mnist-vicreg 10\n")
    with pytest.raises(SystemExit, match="run names repeat"):
        bench.read_spec(spec)


def test_seeds_run_side_by_side_and_group_into_one_row(bench, tmp_path, capsys):
    spec = tmp_path / "spec.txt"
    spec.write_text(
        "".join(
            f"tiny-s{seed} fashion-mnist-simclr 2 --seed {seed} --batch-size 16"
            " --encoder convnet --set encoder_args.width=8\n"
            for seed in (0, 1)
        )
    )
    out = tmp_path / "runs"
    (out / "tiny-s1").mkdir(parents=True)  # an unfinished earlier try starts over
    bench.main([str(spec), "--out", str(out), "--data", "digits", "--parallel", "2"])
    printed = capsys.readouterr().out
    runs = dict(line.split("\t")[:2] for line in printed.splitlines() if line.startswith("tiny-s"))
    assert set(runs) == {"tiny-s0", "tiny-s1"}
    assert all(0 < float(v) <= 100 for v in runs.values())
    group = next(line for line in printed.splitlines() if line.startswith("tiny\t"))
    assert group.split("\t")[1] == "2"
    for name in runs:
        assert (out / name / "eval.json").is_file()
