"""benchmarks/video_frames.py: the frame-encoder baseline's clip features and its table."""

from __future__ import annotations

import pytest
import torch

from selfsup.encoders import build_encoder
from selfsup.views import prepare


@pytest.fixture
def bench(import_benchmark):
    return import_benchmark("video_frames")


def test_clip_features_average_the_frames_and_ignore_their_order(bench):
    torch.manual_seed(0)
    encoder = build_encoder("convnet", in_channels=1, image_size=16).eval()
    clips = torch.randint(0, 256, (5, 4, 1, 16, 16), dtype=torch.uint8)
    features = bench.clip_features(encoder, clips, batch=2)  # batches of 2 clips: 3 of them
    with torch.no_grad():
        by_frame = torch.stack([encoder(prepare(clip, channels=1)).mean(0) for clip in clips])
    torch.testing.assert_close(features, by_frame, rtol=1e-4, atol=1e-5)
    backwards = bench.clip_features(encoder, clips.flip(1))
    torch.testing.assert_close(backwards, features, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(features[0], features[1])  # different clips, different features


def test_table_has_a_column_per_fraction_and_a_row_per_probe(bench):
    rows = [
        {"encoder": "e", "label": lab, "protocol": "knn", "label_fraction": f,
         "accuracy": 0.5, "std": 0.01, "seeds": s}
        for lab in ("garment", "direction") for f, s in ((0.1, 3), (1.0, 1))
    ]  # fmt: skip
    lines = bench.table(rows).splitlines()
    assert lines[0] == "| encoder | label | protocol | 10% labels | 100% labels |"
    assert lines[2] == "| e | garment | knn | 50.0 ± 1.0 | 50.0 |" and len(lines) == 4
