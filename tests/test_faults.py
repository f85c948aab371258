"""Faults and security: a run killed with SIGKILL resumes exactly, a kill during a checkpoint
write or a full disk keeps the last good checkpoint, checkpoints never unpickle code, the
package never evals user text, and a config file cannot send a run outside its folder."""

from __future__ import annotations

import csv
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning_fabric import Fabric

from selfsup.cli import main
from selfsup.engine.checkpoint import latest_checkpoint, load
from selfsup.errors import SelfsupError

PACKAGE = Path(__file__).resolve().parents[1] / "selfsup"

TINY = [
    "--data",
    "digits",
    "--no-eval",
    "--batch-size",
    "32",
    "--precision",
    "32-true",
    "--set",
    "encoder_args.width=8",
    "--set",
    "train.log_every=1",
    "--set",
    "train.progress=false",
]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def step_losses(run: Path) -> dict[int, str]:
    """step -> loss (as written) from a run's metrics.csv; each step must appear once."""
    losses: dict[int, str] = {}
    with (run / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            if row.get("loss"):
                step = int(float(row["step"]))
                assert step not in losses, f"step {step} logged twice"
                losses[step] = row["loss"]
    return losses


def single_thread(fn):
    """Run ``fn`` with one torch thread, as the subprocess below does, so results are bitwise equal."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 8-step run with checkpoints at steps 4 and 8 (copy it before changing it)."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    argv = ["pretrain", *TINY, "--max-steps", "8", "--set", "train.checkpoint_every=4"]
    assert main([*argv, "--out", str(run)]) == 0
    return run


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


# ----------------------------------------------------------------------------- SIGKILL


def test_sigkill_then_resume_gives_the_uninterrupted_losses(tmp_path, capsys):
    steps = ["--max-steps", "40", "--set", "train.checkpoint_every=10"]
    killed = tmp_path / "killed"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfsup", "pretrain", *TINY, *steps, "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while (
            not (killed / "checkpoints" / "latest").exists()
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: as an OOM killer or a node loss
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    ckpt = latest_checkpoint(killed)
    assert ckpt is not None
    stopped_at = int(re.search(r"\d+", ckpt.name).group())
    assert 10 <= stopped_at < 40

    assert single_thread(lambda: main(["pretrain", "--resume", str(killed), "--no-eval"])) == 0
    reference = tmp_path / "reference"
    assert single_thread(lambda: main(["pretrain", *TINY, *steps, "--out", str(reference)])) == 0
    capsys.readouterr()

    expected = step_losses(reference)
    assert sorted(expected) == list(range(1, 41))
    assert step_losses(killed) == expected  # every step once, and each loss bitwise equal
    assert latest_checkpoint(killed).name == "step-000040.ckpt"
    assert not list((killed / "checkpoints").glob("*.tmp"))


# ----------------------------------------------------------------------------- partial writes


def test_a_stale_tmp_file_never_counts_as_a_checkpoint(run_copy, tmp_path, capsys):
    folder = run_copy / "checkpoints"
    # a process killed inside the write of step 12 leaves its partial file behind
    (folder / "step-000012.ckpt.tmp").write_bytes(b"PK\x03\x04 partial")
    (folder / "latest.tmp").write_text("step-0000")
    assert latest_checkpoint(run_copy) == folder / "step-000008.ckpt"
    # without the pointer the highest complete step still wins, and .tmp files do not count
    (folder / "latest").unlink()
    assert latest_checkpoint(run_copy) == folder / "step-000008.ckpt"
    # a pointer naming anything but a checkpoint file of this folder is ignored
    (folder / "latest").write_text("../../config.yaml\n")
    assert latest_checkpoint(run_copy) == folder / "step-000008.ckpt"

    # a folder holding only a partial file has no checkpoint: resuming it is one clear line
    only_tmp = tmp_path / "only_tmp" / "checkpoints"
    only_tmp.mkdir(parents=True)
    (only_tmp / "step-000004.ckpt.tmp").write_bytes(b"partial")
    assert latest_checkpoint(only_tmp.parent) is None
    assert main(["pretrain", "--resume", str(only_tmp.parent)]) == 2
    assert "holds no checkpoint" in one_error_line(capsys)

    # the next successful save clears the stale files
    assert main(["pretrain", "--resume", str(run_copy), "--no-eval", "--max-steps", "12"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in folder.iterdir()) == [
        "latest",
        "step-000008.ckpt",
        "step-000012.ckpt",
    ]


def test_truncated_newest_checkpoint_names_the_file_and_the_one_to_resume_from(run_copy, capsys):
    """The write is atomic (tmp + fsync + rename), so a crash cannot truncate a checkpoint
    that ``latest`` names; a disk that loses data can. Resume then stops with one line naming
    the damaged file and the earlier good one, and resuming that one works."""
    folder = run_copy / "checkpoints"
    newest = folder / "step-000008.ckpt"
    newest.write_bytes(newest.read_bytes()[:200])
    assert main(["pretrain", "--resume", str(run_copy), "--no-eval"]) == 2
    line = one_error_line(capsys)
    assert "step-000008.ckpt is unreadable" in line
    assert f"--resume {folder / 'step-000004.ckpt'}" in line

    assert main(["pretrain", "--resume", str(folder / "step-000004.ckpt"), "--no-eval"]) == 0
    capsys.readouterr()
    assert latest_checkpoint(run_copy) == newest
    state = torch.load(newest, weights_only=True)
    assert state["step"] == 8


# ----------------------------------------------------------------------------- disk full


def test_disk_full_while_saving_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, capsys
):
    real_save = torch.save
    calls = {"n": 0}

    def save_until_full(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj:  # a checkpoint, not something else
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_full)
    run = tmp_path / "run"
    argv = ["pretrain", *TINY, "--max-steps", "8", "--set", "train.checkpoint_every=4"]
    assert main([*argv, "--out", str(run)]) == 2
    line = one_error_line(capsys)
    folder = run / "checkpoints"
    assert f"could not write checkpoint {folder / 'step-000008.ckpt'}" in line
    assert "disk full" in line and "no space" in line
    assert f"the last good checkpoint {folder / 'step-000004.ckpt'} is intact" in line
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-000004.ckpt"]
    assert (folder / "latest").read_text().strip() == "step-000004.ckpt"
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(folder / "step-000004.ckpt", weights_only=True)["step"] == 4
    # once there is space again the run resumes from it
    assert main(["pretrain", "--resume", str(run), "--no-eval"]) == 0
    assert latest_checkpoint(run).name == "step-000008.ckpt"


# ----------------------------------------------------------------------------- security


class _Payload:
    """What a malicious checkpoint would carry: unpickling it runs ``marker.touch()``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_with_a_pickled_object_is_refused(run_copy, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    good = torch.load(run_copy / "checkpoints" / "step-000008.ckpt", weights_only=True)
    evil = run_copy / "checkpoints" / "step-000012.ckpt"
    torch.save({**good, "step": 12, "extra": _Payload(marker)}, evil)
    with pytest.raises(SelfsupError, match="holds pickled Python objects.*weights_only=True"):
        load(Fabric(accelerator="cpu", devices=1), evil, {})
    assert main(["export", str(run_copy), "--checkpoint", str(evil)]) == 2
    assert "step-000012.ckpt holds pickled Python objects" in one_error_line(capsys)
    (run_copy / "checkpoints" / "latest").write_text(evil.name)
    assert main(["pretrain", "--resume", str(run_copy), "--no-eval"]) == 2
    assert "refused" in one_error_line(capsys)
    assert not marker.exists()


def test_exports_are_safetensors_only(tiny_run):
    exported = sorted(p.name for p in tiny_run.iterdir() if p.name.startswith("encoder."))
    assert exported == ["encoder.safetensors", "encoder.yaml"]
    assert not list(tiny_run.rglob("*.pt")) and not list(tiny_run.rglob("*.pth"))


def test_the_package_never_evals_user_text_or_unpickles():
    """eval/exec, pickle.load(s), yaml.load without SafeLoader and torch.load without
    weights_only=True appear nowhere in the package."""
    patterns = {
        "eval(": re.compile(r"(?<![\w.])eval\("),
        "exec(": re.compile(r"(?<![\w.])exec\("),
        "pickle.load": re.compile(r"\b(c?pickle|dill|joblib)\.loads?\("),
        "marshal.load": re.compile(r"\bmarshal\.loads?\("),
        "yaml.load( without SafeLoader": re.compile(
            r"\byaml\.(load|load_all|unsafe_load|full_load)\((?![^)]*SafeLoader)"
        ),
        "torch.load( without weights_only=True": re.compile(
            r"\btorch\.load\((?![^)]*weights_only\s*=\s*True)"
        ),
        "numpy allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    }
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        for name, pattern in patterns.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name}")
    assert not found, found
    # the patterns do catch what they are meant to
    assert patterns["torch.load( without weights_only=True"].search("torch.load(f)")
    assert not patterns["torch.load( without weights_only=True"].search(
        "torch.load(f, weights_only=True)"
    )
    assert patterns["eval("].search("x = eval(text)") and not patterns["eval("].search(
        "model.eval()"
    )


@pytest.mark.parametrize("out", ["/tmp/elsewhere", "../outside", "runs/../../outside", "~/x"])
def test_a_config_file_cannot_send_the_run_outside_the_folder(out, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "preset.yaml"
    config.write_text(yaml.safe_dump({"data": {"name": "digits"}, "out": out}))
    assert main(["pretrain", "--config", str(config), "--max-steps", "1"]) == 2
    line = one_error_line(capsys)
    assert "preset.yaml" in line and repr(out) in line and "--out" in line
    assert not (tmp_path.parent / "outside").exists()


def test_explicit_paths_and_relative_config_folders_are_allowed(tmp_path, capsys, monkeypatch):
    from selfsup.api import make_config

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "preset.yaml"
    config.write_text(yaml.safe_dump({"out": "/tmp/elsewhere"}))
    explicit = str(tmp_path / "explicit")
    assert make_config(config, out=explicit).out == explicit  # --out on the command line
    assert make_config(config, [f"out={explicit}"]).out == explicit  # --set out=...
    config.write_text(yaml.safe_dump({"out": "runs/mine"}))
    assert make_config(config).out == "runs/mine"
