"""A multi-node launch as documented in docs/scaling.md: two `torchrun` agents, one per "node",
meeting on the loopback address, train the same steps as one node with two processes."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = [
    "pretrain",
    "--data",
    "digits",
    "--batch-size",
    "32",
    "--max-steps",
    "4",
    "--no-eval",
    "--set",
    "encoder_args.width=8",
    "--set",
    "train.log_every=1",
    "--set",
    "train.progress=false",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(run: Path) -> dict[int, float]:
    with (run / "metrics.csv").open() as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")}


def quiet_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_two_nodes_on_loopback_match_one_node_with_two_processes(tmp_path):
    port = str(free_port())
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node-rank={rank}",
                "--nproc-per-node=1",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "-m",
                "selfsup",
                *ARGS,
                "--num-nodes",
                "2",
                "--devices",
                "1",
                "--out",
                str(tmp_path / "two-nodes"),
            ],
            env=quiet_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "run folder" in outputs[0]

    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfsup",
            *ARGS,
            "--devices",
            "2",
            "--out",
            str(tmp_path / "one-node"),
        ],
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stdout + one.stderr
    two_nodes, one_node = losses(tmp_path / "two-nodes"), losses(tmp_path / "one-node")
    assert sorted(two_nodes) == [1, 2, 3, 4]
    assert two_nodes == pytest.approx(one_node, rel=1e-5)
    assert (tmp_path / "two-nodes" / "encoder.safetensors").is_file()
