"""Smoke test of benchmarks/mlm_throughput.py: a tiny selfsup-vs-HF run end to end."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")


def test_tiny_run_writes_positive_throughput_for_both(tmp_path, import_benchmark):
    bench = import_benchmark("mlm_throughput")
    out = tmp_path / "mlm.json"
    threads = torch.get_num_threads()
    # --in-process: two spawned children would each spend seconds importing torch & co.
    bench.main(
        [
            "--embed-dim", "32", "--depth", "1", "--heads", "2", "--batch-size", "4",
            "--steps", "2", "--warmup", "1", "--max-length", "16", "--vocab-size", "300",
            "--rounds", "1", "--corpus", "generated", "--in-process", "--json", str(out),
        ]
    )  # fmt: skip
    assert torch.get_num_threads() == threads  # the caller's setting is restored
    result = json.loads(out.read_text())
    assert [r["model"] for r in result["runs"]] == ["selfsup", "hf"]
    for model in ("selfsup", "hf"):
        s = result["summary"][model]
        assert s["tokens_per_s"] > 0 and s["padded_tokens_per_s"] >= s["tokens_per_s"]
        # non-pad / padded tokens per second is the share of real tokens in the timed batches
        assert s["tokens_per_s"] / s["padded_tokens_per_s"] == pytest.approx(result["token_fill"])
        assert s["samples_per_s"] == pytest.approx(s["padded_tokens_per_s"] / 16)
    # Both sides draw the same masks, so they predict the same positions.
    assert result["masks_identical"] is True
    assert result["summary"]["selfsup"]["predicted_per_step"] == pytest.approx(
        result["summary"]["hf"]["predicted_per_step"]
    )
    # Same architecture size: HF's token-type row (D) stands against selfsup's mask token (D).
    assert result["summary"]["selfsup"]["params"] == result["summary"]["hf"]["params"]
    assert result["ratio_tokens_per_s"] > 0
