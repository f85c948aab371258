"""The command line: the demo at tiny size, reproduction from config.yaml, export, and bad
inputs that give one clear error line (exit 2) and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from selfsup import load_encoder
from selfsup.api import extract_features
from selfsup.cli import main
from selfsup.data import load_images

TINY = [
    "--set",
    "encoder_args.width=8",
    "--set",
    "train.batch_size=64",
    "--set",
    "train.max_steps=6",
    "--set",
    "train.log_every=2",
    "--set",
    "eval.seeds=[0]",
    "--set",
    "train.progress=false",
]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


@pytest.mark.slow
def test_demo_through_the_cli_writes_the_whole_run_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    for name in (
        "config.yaml",
        "metrics.csv",
        "eval.json",
        "report.html",
        "encoder.safetensors",
        "encoder.yaml",
    ):
        assert (out / name).is_file(), name
    rows = json.loads((out / "eval.json").read_text())
    assert {r["encoder"] for r in rows} == {"simclr", "random-init", "raw"}
    assert {r["protocol"] for r in rows} == {"linear", "knn"}
    assert {r["label_fraction"] for r in rows} == {0.01, 0.1, 1.0}
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["std"] >= 0.0
    # the exported encoder gives the features of the trained one, from its two files alone
    encoder = load_encoder(out)
    images = load_images("digits", "test").as_tensor()[:32]
    a = extract_features(encoder, images)
    b = extract_features(load_encoder(out / "encoder.safetensors"), images)
    assert a.shape == (32, encoder.embed_dim) and torch.equal(a, b)
    # embed writes .npy features
    assert main(["embed", str(out), "--data", "digits", "--out", str(tmp_path / "f.npy")]) == 0
    feats = np.load(tmp_path / "f.npy")
    assert feats.shape == (540, encoder.embed_dim)
    np.testing.assert_allclose(feats[:32], a.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_config_yaml_reproduces_the_run(tmp_path):
    first = tmp_path / "first"
    argv = ["pretrain", "--data", "digits", "--accelerator", "cpu", "--out", str(first)]
    assert main([*argv, "--no-eval", *TINY]) == 0
    cfg = yaml.safe_load((first / "config.yaml").read_text())
    assert cfg["train"]["accelerator"] == "cpu"  # a flag lands in the config
    assert (
        cfg["method_args"]["temperature"] == 0.2 and cfg["out"] is None
    )  # defaults written out in full
    second = tmp_path / "second"
    assert (
        main(
            ["pretrain", "--config", str(first / "config.yaml"), "--out", str(second), "--no-eval"]
        )
        == 0
    )

    def losses(run):
        rows = [r.split(",") for r in (run / "metrics.csv").read_text().splitlines()]
        header = rows[0]
        i = header.index("loss")
        return [r[i] for r in rows[1:] if r[i]]

    assert losses(first) == losses(second) and len(losses(first)) == 3


def test_export_from_checkpoint_matches_final_export(tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", "digits", "--out", str(run), "--no-eval", *TINY]) == 0
    images = load_images("digits", "test").as_tensor()[:16]
    before = extract_features(load_encoder(run), images)
    assert main(["export", str(run), "--out", str(tmp_path / "again")]) == 0
    torch.testing.assert_close(extract_features(load_encoder(tmp_path / "again"), images), before)


def test_evaluate_flags_change_only_what_they_name_in_the_runs_eval_settings(tmp_path):
    run = tmp_path / "run"
    own = ["--set", "eval.max_train=300", "--set", "eval.label_fractions=[0.5,1.0]"]
    assert main(["pretrain", "--data", "digits", "--out", str(run), "--no-eval", *TINY, *own]) == 0
    assert main(["evaluate", str(run), "--no-report", "--no-baselines"]) == 0
    rows = json.loads((run / "eval.json").read_text())
    assert {r["encoder"] for r in rows} == {"simclr"}  # the flag applied
    assert {r["label_fraction"] for r in rows} == {0.5, 1.0}  # the run's own fractions ...
    assert max(r["num_train"] for r in rows) == 300  # ... and its max_train
    assert main(["evaluate", str(run), "--no-report", "--no-baselines", "--max-train", "200"]) == 0
    rows = json.loads((run / "eval.json").read_text())
    assert max(r["num_train"] for r in rows) == 200


@pytest.fixture
def corrupt_folder(tmp_path):
    root = tmp_path / "imgs" / "cats"
    root.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(root / f"ok{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return tmp_path / "imgs"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["pretrain", "--method", "simclrr"], "unknown method 'simclrr' (did you mean 'simclr'?)"),
        (["pretrain", "--encoder", "resnet99"], "resnet99"),
        (["pretrain", "--data", "imagenet"], "imagenet"),
        (
            ["pretrain", "--data", "fashion-mnist:/nonexistent/folder"],
            "apt-get install dataset-fashion-mnist",
        ),
        (
            ["pretrain", "--set", "train.lrr=0.1"],
            "unknown config key 'train.lrr' (did you mean 'train.lr'?)",
        ),
        (["pretrain", "--set", "train.batch_size=many"], "train.batch_size"),
        (["pretrain", "--batch-size", "-4"], "train.batch_size must be a positive integer"),
        (["pretrain", "--max-time", "soon"], "cannot read duration"),
        (["pretrain", "--set", "method_args.augment.crop_scale=[0.9, 0.1]"], "crop_scale"),
        (["pretrain", "--config", "no-such-preset"], "no-such-preset"),
        (["evaluate", "/nonexistent/run"], "/nonexistent/run"),
        (["pretrain", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    ],
)
def test_bad_input_is_one_clear_line(argv, expected, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "r")] if argv[0] == "pretrain" else argv) == 2
    assert expected in one_error_line(capsys)


def test_bad_data_files_are_one_clear_line(tmp_path, corrupt_folder, capsys):
    assert (
        main(
            ["pretrain", "--data", f"folder:{corrupt_folder}", "--out", str(tmp_path / "r"), *TINY]
        )
        == 2
    )
    line = one_error_line(capsys)
    assert "broken.png" in line and "--skip-bad" in line

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pretrain", "--data", f"folder:{empty}", "--out", str(tmp_path / "r2")]) == 2
    assert str(empty) in one_error_line(capsys)

    np.savez(tmp_path / "flat.npz", images=np.zeros((10, 64), np.uint8))
    assert (
        main(["pretrain", "--data", f"npz:{tmp_path / 'flat.npz'}", "--out", str(tmp_path / "r3")])
        == 2
    )
    assert "(10, 64)" in one_error_line(capsys)


def test_a_real_process_prints_no_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "selfsup", "pretrain", "--method", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip().startswith("error: unknown method 'nope'")
        and "Traceback" not in done.stderr
    )


def test_list_shows_methods_encoders_and_data(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in (
        "simclr",
        "Chen et al. 2020",
        "convnet",
        "resnet18",
        "vit-tiny",
        "digits",
        "fashion-mnist",
        "demo",
    ):
        assert word in out


def test_data_flag_help_names_every_modalitys_sources():
    from selfsup.cli import build_parser
    from selfsup.modalities import MODALITIES

    pretrain = build_parser()._subparsers._group_actions[0].choices["pretrain"]
    (data_flag,) = [a for a in pretrain._actions if "--data" in a.option_strings]
    for name, modality in MODALITIES.items():
        assert f"{name}: " in data_flag.help
        for source in modality.sources:
            assert source in data_flag.help
