"""Federated pretraining on Flower: the aggregate is the clients' weighted mean, a server and
client processes train over loopback gRPC, a client killed mid-round is recorded and the
rounds go on; partitions divide the data as their rules say."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.errors import SelfsupError
from selfsup.federated.partition import Partition, partition_indices

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(
    method="simclr",
    encoder="convnet",
    encoder_args={"width": 8},
    data="digits",
    train={"batch_size": 32, "progress": False, "log_every": 1},
)
TINY_FLAGS = [
    "--method", "simclr", "--encoder", "convnet", "--data", "digits", "--batch-size", "32",
    "--set", "encoder_args.width=8", "--set", "train.progress=false", "--no-eval",
]  # fmt: skip


def test_iid_partition_gives_every_sample_to_one_client():
    parts = partition_indices(103, 4, "iid", seed=1)
    everything = torch.cat(parts).sort().values
    assert torch.equal(everything, torch.arange(103))
    assert sorted(len(p) for p in parts) == [25, 26, 26, 26]


def test_dirichlet_partition_skews_classes_as_alpha_falls():
    labels = torch.arange(10).repeat(200)  # 2,000 samples, 10 balanced classes

    def classes_per_client(alpha: float) -> float:
        parts = partition_indices(len(labels), 10, "dirichlet", labels=labels, alpha=alpha, seed=0)
        assert torch.equal(torch.cat(parts).sort().values, torch.arange(len(labels)))
        # the classes that make up 90% of each client's samples
        counts = []
        for p in parts:
            share = np.sort(np.bincount(labels[p].numpy(), minlength=10))[::-1] / max(1, len(p))
            counts.append(int(np.searchsorted(np.cumsum(share), 0.9) + 1))
        return float(np.mean(counts))

    assert classes_per_client(0.1) < 4 < 8 < classes_per_client(100.0)


def test_column_partition_groups_samples_by_key_and_checks_the_file(tmp_path):
    path = tmp_path / "device.txt"
    path.write_text("b\na\nb\nc\na\n")
    parts = partition_indices(5, 3, "column", column=str(path))
    assert [p.tolist() for p in parts] == [[1, 4], [0, 2], [3]]
    with pytest.raises(SelfsupError, match="has 5 lines but the training split has 6"):
        partition_indices(6, 3, "column", column=str(path))
    with pytest.raises(SelfsupError, match="names 3 clients"):
        partition_indices(5, 2, "column", column=str(path))
    with pytest.raises(SelfsupError, match="no labels"):
        partition_indices(5, 2, "dirichlet", labels=torch.full((5,), -1))


def test_a_partition_reads_its_samples_of_the_whole_set():
    from selfsup.data import load_images

    whole = load_images("digits", "train")
    part = Partition(whole, torch.tensor([5, 0, 9]))
    assert len(part) == 3 and part.input_key == whole.input_key and part.in_memory
    assert torch.equal(part.as_tensor(), whole.as_tensor()[[5, 0, 9]])
    assert torch.equal(part.labels(), whole.labels()[[5, 0, 9]])
    assert torch.equal(part[1]["image"], whole[0]["image"])


needs_flower = pytest.mark.skipif(
    importlib.util.find_spec("flwr") is None,
    reason='needs Flower: pip install "selfsup[federated]"',
)


@needs_flower
def test_aggregate_of_each_round_is_the_weighted_mean_of_the_clients(tmp_path, monkeypatch):
    """2 rounds x 3 clients in the simulation; the clients' arrays are caught as they leave
    LocalTrainer.fit, and the run's checkpoint of each round must be their mean weighted by
    the clients' sample counts (unequal: a Dirichlet split)."""
    from selfsup.federated import federate
    from selfsup.federated import flower as fl

    sent: dict[int, list] = {1: [], 2: []}
    received: dict[int, list] = {1: [], 2: []}
    original = fl.LocalTrainer.fit

    def spy(self, arrays, round_, mu):
        received[round_].append([a.copy() for a in arrays])
        out, metrics = original(self, arrays, round_, mu)
        sent[round_].append(([a.copy() for a in out], len(self.data)))
        return out, metrics

    monkeypatch.setattr(fl.LocalTrainer, "fit", spy)
    run = federate(
        **TINY,
        federated={
            "clients": 3,
            "rounds": 2,
            "local_steps": 2,
            "partition": "dirichlet",
            "alpha": 5.0,
        },
        out=str(tmp_path / "run"),
        evaluate=False,
    )
    sizes = [n for _, n in sent[1]]
    assert len(sent[1]) == len(sent[2]) == 3 and len(set(sizes)) > 1 and sum(sizes) == 1257
    for round_ in (1, 2):
        ckpt = torch.load(
            run.run_dir / "checkpoints" / f"step-{2 * round_:06d}.ckpt", weights_only=True
        )["method"]
        weights = np.array([n for _, n in sent[round_]], dtype=np.float64)
        for i, (key, value) in enumerate(ckpt.items()):
            mean = (
                sum(w * arrays[i] for (arrays, _), w in zip(sent[round_], weights)) / weights.sum()
            )
            if value.is_floating_point():
                np.testing.assert_allclose(value.numpy(), mean, rtol=1e-5, atol=1e-6, err_msg=key)
            else:
                assert np.array_equal(value.numpy(), np.round(mean)), key
        first = next(k for k, v in ckpt.items() if v.is_floating_point())
        spread = [arrays[0] for arrays, _ in sent[round_]]
        assert not np.allclose(spread[0], spread[1])  # the clients really trained apart
        assert list(ckpt)[0] == first
    # round 2 starts every client from round 1's aggregate
    ckpt1 = torch.load(run.run_dir / "checkpoints" / "step-000002.ckpt", weights_only=True)[
        "method"
    ]
    for arrays in received[2]:
        for a, value in zip(arrays, ckpt1.values()):
            np.testing.assert_allclose(a, value.float().numpy(), rtol=0, atol=0)
    log = json.loads((run.run_dir / "federated.json").read_text())
    assert [r["trained"] for r in log["rounds"]] == [[0, 1, 2], [0, 1, 2]]
    assert (run.run_dir / "encoder.safetensors").is_file() and (
        run.run_dir / "metrics.csv"
    ).is_file()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _cli(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "selfsup", *args],
        env=_env(),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def _federation(
    tmp_path: Path, address: str, run: Path, fed: list[str], clients: int
) -> tuple[subprocess.Popen, list[subprocess.Popen]]:
    """A server process serving ``address`` and client processes 0..clients-1 joining it."""
    server = _cli(
        "federate", "--serve", address, *fed, *TINY_FLAGS, "--out", str(run),
        log=tmp_path / "server.log",
    )  # fmt: skip
    joined = [
        _cli(
            "federate",
            "--join",
            address,
            "--client-id",
            str(k),
            "--out",
            str(tmp_path / f"c{k}"),
            log=tmp_path / f"client{k}.log",
        )  # fmt: skip
        for k in range(clients)
    ]
    return server, joined


def _finish(server: subprocess.Popen, clients: list[subprocess.Popen], logs: Path) -> None:
    try:
        code = server.wait(timeout=600)
    finally:
        for c in clients:
            try:
                c.wait(timeout=180)  # a loaded machine is slow to tear a process down
            except subprocess.TimeoutExpired:
                c.kill()
        if server.poll() is None:
            server.kill()
    tails = {p.name: p.read_text()[-1500:] for p in logs.glob("*.log")}
    assert code == 0, tails


@needs_flower
@pytest.mark.slow
def test_a_server_and_two_client_processes_train_over_loopback(tmp_path):
    address = f"127.0.0.1:{_port()}"
    run = tmp_path / "run"
    fed = ["--clients", "2", "--rounds", "2", "--local-steps", "2"]
    server, clients = _federation(tmp_path, address, run, fed, clients=2)
    _finish(server, clients, tmp_path)
    log = json.loads((run / "federated.json").read_text())
    assert [(r["round"], r["trained"], r["dropped"]) for r in log["rounds"]] == [
        (1, [0, 1], []),
        (2, [0, 1], []),
    ]
    assert (run / "encoder.safetensors").is_file() and (
        run / "checkpoints" / "step-000004.ckpt"
    ).is_file()
    assert all(c.returncode == 0 for c in clients)


VICTIM = textwrap.dedent(
    """
    import pathlib, sys, time
    from selfsup.federated import flower

    def stall(self, arrays, round_, mu):  # the client is in the middle of its round
        pathlib.Path(sys.argv[1]).touch()
        time.sleep(600)

    flower.LocalTrainer.fit = stall
    from selfsup.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


@needs_flower
@pytest.mark.slow
def test_a_client_killed_mid_round_is_recorded_and_the_rounds_go_on(tmp_path):
    address = f"127.0.0.1:{_port()}"
    run = tmp_path / "run"
    fed = ["--clients", "3", "--min-clients", "2", "--rounds", "2", "--local-steps", "2"]
    server, clients = _federation(tmp_path, address, run, fed, clients=2)
    script, mark = tmp_path / "victim.py", tmp_path / "in-round"
    script.write_text(VICTIM)
    victim = subprocess.Popen(
        [sys.executable, str(script), str(mark), "federate", "--join", address, "--client-id", "2"],
        env=_env(),
        stdout=(tmp_path / "victim.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 400
    while not mark.exists() and time.monotonic() < deadline and server.poll() is None:
        time.sleep(0.2)
    assert mark.exists(), (tmp_path / "victim.log").read_text()[-1500:]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    _finish(server, clients, tmp_path)
    log = json.loads((run / "federated.json").read_text())
    assert [(r["round"], r["trained"], r["dropped"]) for r in log["rounds"]] == [
        (1, [0, 1], [2]),
        (2, [0, 1], []),
    ]
    assert all(r["aggregated"] for r in log["rounds"])
    assert (run / "checkpoints" / "step-000004.ckpt").is_file()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--partition", "dirichlet"], "dirichlet:ALPHA"),
        (["--partition", "dirichlet:many"], "needs a number"),
        (["--partition", "shards:3"], "use iid, dirichlet:ALPHA"),
        (["--join", "127.0.0.1:1"], "--join needs --client-id"),
    ],
)
def test_bad_federation_flags_are_one_line_errors(argv, says, capsys):
    from selfsup.cli import main

    assert main(["federate", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
