"""Test-session settings."""

from __future__ import annotations

import os

import torch

# Under pytest-xdist every worker is its own process: two workers with two OpenMP threads
# each on a 2-core machine spin against each other and run several times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(
        max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    )
