"""Continual pretraining on a stream (``selfsup pretrain --resume RUN --data NEW``): the
reservoir buffer against a slow reference, the exact replay share of every batch, the lineage
a continual run records, its exact resume, its forgetting report, and its bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_faults import one_error_line, single_thread, step_losses

from selfsup.cli import main
from selfsup.config import make_config
from selfsup.data.replay import ReplayMix, reservoir_sample
from selfsup.data.subset import keep_classes
from selfsup.engine.sampler import ResumableSampler
from selfsup.errors import SelfsupError

TINY = [
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
OLD = ["--data", "digits", "--set", "data.classes=[0,1,2,3,4]"]
NEW = ["--set", "data.classes=[5,6,7,8,9]"]


def slow_reservoir(n: int, size: int, seed: int) -> list[int]:
    """Algorithm R written the obvious way: one draw per item after the first ``size``."""
    rng = np.random.default_rng(seed)
    buffer = []
    for i in range(n):
        if i < size:
            buffer.append(i)
        else:
            j = int(rng.integers(0, i + 1))
            if j < size:
                buffer[j] = i
    return buffer


@pytest.mark.parametrize(("n", "size", "seed"), [(10, 3, 0), (1000, 17, 5), (7, 10, 1), (50, 0, 2)])
def test_reservoir_matches_the_slow_reference(n, size, seed):
    assert reservoir_sample(n, size, seed).tolist() == slow_reservoir(n, size, seed)


def test_reservoir_is_deterministic_and_uniform():
    assert (reservoir_sample(500, 20, 3) == reservoir_sample(500, 20, 3)).all()
    assert (reservoir_sample(500, 20, 3) != reservoir_sample(500, 20, 4)).any()
    n, size, seeds = 40, 10, 4000
    counts = np.zeros(n)
    for seed in range(seeds):
        held = reservoir_sample(n, size, seed)
        assert len(set(held.tolist())) == size  # no item twice
        counts[held] += 1
    share = counts / seeds  # every item: size / n = 0.25, std sqrt(.25·.75/4000) = 0.0068
    assert np.abs(share - size / n).max() < 0.03, share


class Tensors:
    """A tiny in-memory data set: row i of ``x`` is sample i."""

    in_memory = True
    has_labels = True
    input_key = "image"

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": torch.tensor(0)}

    def as_tensor(self) -> torch.Tensor:
        return self.x

    def labels(self) -> torch.Tensor:
        return torch.zeros(len(self.x), dtype=torch.long)


@pytest.mark.parametrize(("replay", "world"), [(16, 1), (8, 1), (3, 2), (31, 2)])
def test_every_batch_of_every_process_holds_exactly_the_replay_share(replay, world):
    new = Tensors(torch.arange(200).reshape(200, 1))
    old = [
        Tensors(-torch.arange(1, 31).reshape(30, 1)),
        Tensors(-torch.arange(100, 120).reshape(20, 1)),
    ]
    buffer = np.array([[0, 4], [1, 0], [1, 19], [0, 29], [0, 0]])
    batch = 32
    mix = ReplayMix(new, old, buffer, replay, batch, world)
    fresh = batch - replay
    assert mix.batches == 200 // (world * fresh)
    seen_new = []
    for rank in range(world):
        sampler = ResumableSampler(
            len(mix), batch, seed=7, rank=rank, world=world, order=mix.epoch_order
        )
        assert sampler.batches_per_epoch == mix.batches
        indices = np.array(list(iter(sampler))).reshape(-1, batch)
        assert ((indices >= 200).sum(axis=1) == replay).all()  # exactly `replay` per batch
        seen_new += indices[indices < 200].tolist()
        rows = mix.as_tensor()[torch.as_tensor(indices[0])].flatten()
        expected = [mix[int(i)]["image"].item() for i in indices[0]]
        assert rows.tolist() == expected  # the whole-tensor view is the samples
        replayed = set(rows[rows < 0].tolist())
        assert replayed <= {-5, -100, -119, -30, -1}
    assert len(seen_new) == len(set(seen_new))  # each new sample at most once an epoch
    # a pure function of (seed, epoch)
    again = next(iter(mix.epoch_order(7, 0)))
    assert (next(iter(mix.epoch_order(7, 0))) == again).all()
    assert (next(iter(mix.epoch_order(7, 1))) != again).any()


def test_keep_classes_keeps_ids_and_refuses_what_it_cannot_keep():
    from selfsup.modalities import load_data

    digits = load_data("digits", "train")
    kept = keep_classes(digits, (3, 1), "digits")
    assert set(kept.labels().tolist()) == {1, 3}
    assert kept.as_tensor().shape[1:] == digits.as_tensor().shape[1:]
    with pytest.raises(SelfsupError, match="keeps no sample"):
        keep_classes(digits, (42,), "digits")


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> tuple[Path, Path]:
    """A 4-step run on digits 0-4 and its continual run on digits 5-9 (8 steps, checkpoints
    at 4 and 8, a buffer of 40 earlier images), neither evaluated."""
    folder = tmp_path_factory.mktemp("stream")
    parent, child = folder / "old", folder / "new"
    assert (
        main(["pretrain", *OLD, *TINY, "--max-steps", "4", "--no-eval", "--out", str(parent)]) == 0
    )
    argv = ["pretrain", "--resume", str(parent), *NEW, "--max-steps", "8", "--replay", "40"]
    argv += ["--set", "train.checkpoint_every=4", "--no-eval", "--out", str(child)]
    assert single_thread(lambda: main(argv)) == 0  # as the resume below runs
    return parent, child


def test_a_continual_run_records_its_lineage_and_starts_from_the_parent(stream):
    parent, child = stream
    cfg = make_config(child / "config.yaml")
    assert cfg.continual.parent == str(parent)
    assert cfg.continual.parent_checkpoint == str(parent / "checkpoints" / "step-000004.ckpt")
    assert cfg.continual.stream == [{"name": "digits", "classes": [0, 1, 2, 3, 4]}]
    assert cfg.continual.replay == 40 and cfg.data.classes == (5, 6, 7, 8, 9)
    assert cfg.train.max_steps == 8
    # the encoder it started from is the parent's final one; the parent is left as it was
    start = load_file(child / "start" / "encoder.safetensors")
    final = load_file(parent / "encoder.safetensors")
    assert start.keys() == final.keys() and all(torch.equal(start[k], final[k]) for k in final)
    assert sorted(p.name for p in (parent / "checkpoints").glob("*.ckpt")) == ["step-000004.ckpt"]
    parent_cfg = yaml.safe_load((parent / "config.yaml").read_text())
    assert parent_cfg["continual"]["parent"] is None
    # a fresh schedule: its own 8 steps, from step 1
    assert sorted(step_losses(child)) == list(range(1, 9))
    # it trained on digits 5-9 with 16 of every 32 images from a buffer of 40 of digits 0-4
    from selfsup.pretraining import training_data

    mixed, _ = training_data(cfg, child, world=1)
    assert isinstance(mixed, ReplayMix) and mixed.replay == 16 and len(mixed.buffer) == 40
    assert set(mixed.new.labels().tolist()) == {5, 6, 7, 8, 9}
    assert set(mixed.labels()[len(mixed.new) :].tolist()) <= {0, 1, 2, 3, 4}
    cfg.continual.replay = 0
    assert not isinstance(training_data(cfg, child, world=1)[0], ReplayMix)
    # a third task continues the stream: the earlier tasks' data, oldest first
    from selfsup.continual import continual_config

    ckpt = child / "checkpoints" / "step-000008.ckpt"
    third = continual_config(child, ckpt, child / "config.yaml", [], {"data": "npz:x.npz"})
    assert third is not None and third.continual.parent == str(child)
    assert third.continual.stream == [
        {"name": "digits", "classes": [0, 1, 2, 3, 4]},
        {"name": "digits", "classes": [5, 6, 7, 8, 9]},
    ]
    assert third.data.classes is None  # a new source starts with all its classes
    same = continual_config(child, ckpt, child / "config.yaml", [], {"data": "digits"})
    assert same is None  # its own data: an exact resume


def test_an_interrupted_continual_run_resumes_exactly(stream, tmp_path):
    _, child = stream
    copy = Path(shutil.copytree(child, tmp_path / "copy"))
    resume = copy / "checkpoints" / "step-000004.ckpt"
    assert single_thread(lambda: main(["pretrain", "--resume", str(resume), "--no-eval"])) == 0
    assert not (copy / "new").exists()  # the same run folder, not another continual run
    assert step_losses(copy) == step_losses(child)


def test_the_forgetting_report_probes_the_start_and_end_encoders(stream):
    from selfsup.evaluate.continual import evaluate_continual

    _, child = stream
    cfg = make_config(
        child / "config.yaml",
        ["eval.protocols=[knn]", "eval.seeds=[0]", "eval.report=false"],
    )
    summary = evaluate_continual(child, cfg)
    rows = summary["rows"]
    assert [(r["task"], r["role"], r["protocol"]) for r in rows] == [
        (0, "old", "knn"),
        (1, "new", "knn"),
    ]
    old, new = rows
    assert old["forgetting"] == pytest.approx(old["before"] - old["after"])
    assert new["gain"] == pytest.approx(new["after"] - new["before"])
    assert summary["forgetting"]["knn"] == pytest.approx(old["forgetting"])
    assert json.loads((child / "continual.json").read_text()) == summary
    # each probe scored only its task's classes: the old task's test split is digits 0-4
    before_old = json.loads((child / "continual" / "before-task0" / "eval.json").read_text())
    after_new = json.loads((child / "continual" / "after-task1" / "eval.json").read_text())
    assert before_old[0]["accuracy"] == old["before"] and after_new[0]["accuracy"] == new["after"]
    from selfsup.modalities import load_data

    test = load_data("digits", "test")
    assert before_old[0]["num_test"] == int((test.labels() < 5).sum())


def test_bad_input_is_one_line(stream, tmp_path, capsys):
    parent, _ = stream
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pretrain", "--resume", str(empty), "--data", "digits"]) == 2
    assert "holds no checkpoint" in one_error_line(capsys)
    assert (
        main(
            [
                "pretrain",
                "--resume",
                str(parent),
                "--data",
                "fortunes",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 2
    )
    line = one_error_line(capsys)
    assert "learned from image data" in line and "is text data" in line
    argv = ["pretrain", "--resume", str(parent), *NEW, "--out", str(tmp_path / "e")]
    assert main([*argv, "--set", "encoder_args.width=16"]) == 2
    assert "keeps" in one_error_line(capsys)
    assert main([*argv, "--set", "continual.replay_ratio=1"]) == 2
    assert "replay_ratio must lie in [0, 1)" in one_error_line(capsys)
    assert main(["pretrain", "--resume", str(parent), *NEW, "--out", str(parent)]) == 2
    assert "not into" in one_error_line(capsys)


def test_a_text_stream_keeps_its_tokenizer_and_replays_tokens(tmp_path):
    """Replay is a data set wrapper: any modality continues through the Modality contract."""
    from selfsup.pretraining import training_data

    words = ["alpha", "beta", "gamma", "delta", "kappa", "sigma"]
    for name, offset in (("a", 0), ("b", 3)):
        lines = [" ".join(words[offset + (i + j) % 3] for j in range(6)) for i in range(48)]
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
    text = ["--method", "mlm", "--batch-size", "16", "--max-steps", "2", "--no-eval"]
    text += ["--precision", "32-true", "--vocab-size", "60", "--set", "train.progress=false"]
    old, new = tmp_path / "old", tmp_path / "new"
    assert main(["pretrain", "--data", f"text:{tmp_path / 'a.txt'}", *text, "--out", str(old)]) == 0
    argv = ["pretrain", "--resume", str(old), "--data", f"text:{tmp_path / 'b.txt'}"]
    assert main([*argv, "--max-steps", "2", "--replay", "8", "--no-eval", "--out", str(new)]) == 0
    assert (new / "tokenizer.json").read_bytes() == (old / "tokenizer.json").read_bytes()
    mixed, _ = training_data(make_config(new / "config.yaml"), new, world=1)
    assert isinstance(mixed, ReplayMix) and mixed.in_memory and mixed.replay == 8
    assert mixed.as_tensor().shape == (len(mixed.new) + 8, mixed.new.as_tensor().shape[1])
