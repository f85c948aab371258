"""benchmarks/clip_throughput.py: a tiny selfsup-vs-HF CLIP run end to end, and its
generated pairs."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("transformers")

TINY = [
    "--pairs", "generated", "--batch-size", "4", "--image-size", "16", "--patch-size", "8",
    "--image-dim", "32", "--image-depth", "1", "--image-heads", "2", "--max-length", "16",
    "--steps", "2", "--warmup", "1", "--rounds", "1",
    "--in-process",  # two spawned children would each spend seconds importing torch & co.
]  # fmt: skip


@pytest.fixture
def bench(import_benchmark):
    return import_benchmark("clip_throughput")


def test_tiny_run_times_the_same_towers_on_both_sides(bench, tmp_path):
    out = tmp_path / "clip.json"
    threads = torch.get_num_threads()
    bench.main([*TINY, "--json", str(out)])
    assert torch.get_num_threads() == threads  # the caller's setting is restored
    result = json.loads(out.read_text())
    assert [r["model"] for r in result["runs"]] == ["selfsup", "hf"]
    ours, theirs = result["summary"]["selfsup"], result["summary"]["hf"]
    for s in (ours, theirs):
        assert s["samples_per_s"] > 0 and s["gflop_per_s"] > 0
        assert s["samples_per_s"] == pytest.approx(4 * 1000 / s["ms_per_step"])
    # Same towers: the parameters differ by exactly the ones the notes name, and both sides
    # do the same matrix work (the loss's few similarity products aside).
    assert ours["params"] - sum(ours["params_only_here"].values()) == theirs["params"] - sum(
        theirs["params_only_here"].values()
    )
    assert ours["gflop_per_step"] == pytest.approx(theirs["gflop_per_step"], rel=1e-3)
    # Both start from a loss near chance over the batch of 4 (log 4), as CLIP's init should.
    for run in result["runs"]:
        assert abs(run["first_loss"] - math.log(4)) < 1.5
    assert result["ratio_samples_per_s_median"] > 0


def test_generated_pairs_say_what_they_draw(bench):
    images, captions = bench.generated_pairs(6, 16, seed=1)
    for image, caption in zip(images, captions):
        colour, shape, place = caption.split()[1], caption.split()[2], caption.split(" in the ")[1]
        row, col = bench.PLACES[" ".join(place.split()[:2]).rstrip(".")]
        quarter = image[:, row * 8 : row * 8 + 8, col * 8 : col * 8 + 8]  # (3, 8, 8)
        rgb = torch.tensor(bench.COLOURS[colour], dtype=torch.uint8)[:, None, None]
        assert shape in ("square", "disk")
        assert bool((quarter == rgb).all(dim=0).any())  # the shape is in its quarter
