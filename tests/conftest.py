"""Test-session settings."""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

# The suite checks exact numbers (a resumed run repeats the uninterrupted losses bit for bit, a
# config.yaml reproduces its run), which CPU kernels give and CUDA kernels do not promise. So it
# runs on the CPU also on a machine with a GPU, subprocesses included; benchmarks/gpu_check.sh
# exercises the CUDA paths.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist every worker is its own process: two workers with two OpenMP threads
# each on a 2-core machine spin against each other and run several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(
        max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    )


def _free_port(start: int, count: int) -> int:
    """A port in [start, start + count) that nothing listens on now."""
    for port in range(start, start + count):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}-{start + count - 1}")


@pytest.fixture(autouse=True)
def _own_master_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the 2-process tests a port of their own: each pytest-xdist worker searches its own
    range, below Linux's ephemeral ports, afresh for every test, so two workers' groups can
    never share a port. (Left to Lightning, a worker picks a port once and keeps it in its
    environment for all later tests.) A guard, not the fix of an observed failure: the aborts
    seen at exit came from the gloo group's teardown, see cli._leave_process_group."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    monkeypatch.setenv("MASTER_PORT", str(_free_port(20000 + 500 * index, 500)))


@pytest.fixture
def import_benchmark(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """``import_benchmark("mlm_throughput")``: a script of benchmarks/ as a module (the scripts
    are no package; they import each other as top-level modules)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module
