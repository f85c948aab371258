"""The Python API: ``pretrain``, ``evaluate``, ``compare_runs``, ``embed``, ``load_encoder``
and friends.

A thin façade over the modules that do the work (``selfsup.pretraining``,
``selfsup.evaluate.run``, ``selfsup.config``, ``selfsup.export``); the command line is a thin
layer over these functions, and everything it does can be done from Python, with any
``nn.Module`` as the encoder. Nothing inside the package imports from here.
"""

from __future__ import annotations

from selfsup.config import make_config
from selfsup.evaluate.compare import compare_runs
from selfsup.evaluate.features import extract_features
from selfsup.evaluate.run import embed, evaluate_run
from selfsup.export import load_encoder
from selfsup.modalities.pairs import zero_shot_images
from selfsup.modalities.text import generate_text
from selfsup.pretraining import Run, export_checkpoint, pretrain

__all__ = [
    "Run",
    "compare_runs",
    "embed",
    "evaluate_run",
    "export_checkpoint",
    "extract_features",
    "generate_text",
    "load_encoder",
    "make_config",
    "pretrain",
    "zero_shot_images",
]
