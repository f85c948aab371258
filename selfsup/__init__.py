"""selfsup: self-supervised pretraining, evaluation and export.

import selfsup
run = selfsup.pretrain(method="simclr", data="fashion-mnist", train={"max_time": "15m"})
rows = selfsup.evaluate(run.run_dir)
encoder = selfsup.load_encoder(run.run_dir)
selfsup.compare_runs([run.run_dir, other_run_dir], out="compare")
"""

from selfsup.api import (
    Run,
    compare_runs,
    embed,
    export_checkpoint,
    extract_features,
    load_encoder,
    make_config,
    pretrain,
)
from selfsup.api import evaluate_run as evaluate
from selfsup.errors import SelfsupError

__version__ = "0.1.0"

__all__ = [
    "Run",
    "SelfsupError",
    "compare_runs",
    "embed",
    "evaluate",
    "export_checkpoint",
    "extract_features",
    "load_encoder",
    "make_config",
    "pretrain",
]
