"""Test-session settings."""

from __future__ import annotations

import os

# The suite checks exact numbers (a resumed run repeats the uninterrupted losses bit for bit, a
# config.yaml reproduces its run), which CPU kernels give and CUDA kernels do not promise. So it
# runs on the CPU also on a machine with a GPU, subprocesses included; benchmarks/gpu_check.sh
# exercises the CUDA paths.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import torch  # noqa: E402

# Under pytest-xdist every worker is its own process: two workers with two OpenMP threads
# each on a 2-core machine spin against each other and run several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(
        max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    )
