"""The memory and distribution options: gradient checkpointing, micro-batches, SyncBatchNorm,
FSDP and multi-node runs."""

from __future__ import annotations

import pytest

from selfsup.api import pretrain
from selfsup.cli import main

TINY_VIT = {
    "method": "simclr",
    "encoder": "vit-tiny",
    "encoder_args": {"patch_size": 4, "depth": 2},
    "data": {"name": "digits"},
    "train": {"batch_size": 32, "max_steps": 3, "progress": False, "log_every": 1},
}


def test_grad_checkpointing_keeps_the_losses(tmp_path):
    plain = pretrain(TINY_VIT, out=str(tmp_path / "a"), evaluate=False)
    checkpointed = pretrain(
        TINY_VIT,
        out=str(tmp_path / "b"),
        evaluate=False,
        overrides=["train.grad_checkpointing=true"],
    )
    assert checkpointed.train.losses == pytest.approx(plain.train.losses, rel=1e-5)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--grad-checkpointing"], "encoder 'convnet' has no gradient checkpointing"),
        (["--sync-batchnorm", "--devices", "2"], "train.sync_batchnorm needs GPUs"),
        (["--micro-batch-size", "0"], "train.micro_batch_size must be a positive integer"),
        (
            ["--strategy", "fsdp", "--devices", "2", "--micro-batch-size", "8"],
            "gradient cache runs its first pass outside the sharded module",
        ),
        (["--num-nodes", "2"], "a multi-node run needs --out"),
    ],
)
def test_options_that_cannot_work_say_why(argv, expected, capsys, tmp_path):
    args = ["pretrain", "--max-steps", "2", "--batch-size", "32", "--no-eval"]
    out = [] if "--num-nodes" in argv else ["--out", str(tmp_path / "r")]
    assert main([*args, *argv, *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
