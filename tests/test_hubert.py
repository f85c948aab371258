"""HuBERT's parts against slow references written the obvious way (MFCC deltas, the frame
alignment of its units, k-means++ seeding, the mini-batch k-means step, the cosine unit
loss), its k-means freeze, and data2vec's speech targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.data.info import DataInfo
from selfsup.encoders import build_encoder
from selfsup.losses.data2vec import data2vec_targets
from selfsup.losses.hubert import MiniBatchKMeans, hubert_logits, kmeans_plus_plus
from selfsup.methods import build_method
from selfsup.views.spectrogram import deltas, mfcc, mfcc_deltas


def test_deltas_match_the_regression_formula() -> None:
    feats = torch.randn(2, 9, 3)
    got = deltas(feats)
    want = torch.zeros_like(feats)
    for b in range(2):
        for t in range(9):
            for c in range(3):
                column = [float(feats[b, min(max(i, 0), 8), c]) for i in range(t - 2, t + 3)]
                num = sum(n * (column[2 + n] - column[2 - n]) for n in (1, 2))
                want[b, t, c] = num / (2 * (1 + 4))
    assert torch.allclose(got, want, atol=1e-6)


def test_unit_features_frame_t_starts_at_sample_t_times_hop() -> None:
    """Frame t of ``mfcc_deltas`` is the MFCC of the window starting at t · hop: what the
    feature encoder's frame t sees (so units and latent frames line up)."""
    rate, hop = 8000, 160
    wave = torch.randn(1, 4000)
    feats = mfcc_deltas(wave, rate, hop)  # (1, N, 39)
    assert feats.shape[-1] == 39
    for t in (0, 5, feats.shape[1] - 1):
        window = wave[:, t * hop : t * hop + 256]  # n_fft of a 25 ms window at 8 kHz
        alone = mfcc(window, rate, hop_ms=20.0, center=False)  # one frame
        assert alone.shape[1] == 1
        assert torch.allclose(feats[0, t, :13], alone[0, 0], atol=1e-4)


def test_kmeans_plus_plus_picks_distinct_points_far_apart_first() -> None:
    # three tight, far-apart groups: k-means++ with 3 seeds takes one point of each
    g = torch.Generator().manual_seed(0)
    groups = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    x = (groups[:, None, :] + 0.01 * torch.randn(3, 50, 2, generator=g)).flatten(0, 1)
    seeds = kmeans_plus_plus(x, 3, torch.Generator().manual_seed(1))
    assert all(any((row == p).all() for p in x) for row in seeds)  # seeds are data points
    nearest_group = torch.cdist(seeds, groups).argmin(dim=1)
    assert sorted(nearest_group.tolist()) == [0, 1, 2]
    again = kmeans_plus_plus(x, 3, torch.Generator().manual_seed(1))
    assert torch.equal(seeds, again)  # deterministic by generator


def test_minibatch_kmeans_step_is_the_per_point_running_mean() -> None:
    g = torch.Generator().manual_seed(0)
    km = MiniBatchKMeans(4, 3)
    first = torch.randn(40, 3, generator=g)
    km.update(first, torch.Generator().manual_seed(0))
    centres, counts = km.centres.clone(), km.counts.clone()
    batch = torch.randn(30, 3, generator=g)
    km.update(batch)
    # reference: assign with the batch-start centres, then c += (x - c) / n point by point
    ref_c, ref_n = centres.clone(), counts.clone()
    labels = [int(torch.cdist(x[None], centres).argmin()) for x in batch]
    for x, k in zip(batch, labels):
        ref_n[k] += 1
        ref_c[k] += (x - ref_c[k]) / ref_n[k]
    assert torch.allclose(km.centres, ref_c, atol=1e-5)
    assert torch.equal(km.counts, ref_n)
    assert km.counts.sum() == 70


def test_unit_loss_matches_the_reference() -> None:
    g = torch.Generator().manual_seed(0)
    o, e = torch.randn(6, 5, generator=g), torch.randn(4, 5, generator=g)
    targets = torch.tensor([0, 3, 1, 1, 2, 0])
    got = F.cross_entropy(hubert_logits(o, e, 0.1), targets)
    total = 0.0
    for i in range(6):
        scores = [float(o[i] @ e[k] / (o[i].norm() * e[k].norm())) / 0.1 for k in range(4)]
        log_z = torch.logsumexp(torch.tensor(scores), dim=0)
        total += -(scores[int(targets[i])] - float(log_z))
    assert abs(float(got) - total / 6) < 1e-4


def _hubert(**args):
    encoder = build_encoder(
        "wav2vec2-tiny", sample_rate=8000, conv_dim=16, embed_dim=32, depth=1, num_heads=2
    )
    info = DataInfo(modality="audio", sample_rate=8000, max_samples=8000)
    return build_method("hubert", {"clusters": 8, **args}, encoder, info)


def test_hubert_fits_its_units_then_freezes_them() -> None:
    torch.manual_seed(0)
    method = _hubert(kmeans_fraction=0.5)
    wave = torch.randn(4, 8000)
    method.training_step({"audio": wave})
    assert bool(method.kmeans.seeded) and float(method.kmeans.counts.sum()) > 0
    method.on_step_end(0.2)  # still fitting
    before = method.kmeans.counts.clone()
    method.training_step({"audio": wave})
    assert float(method.kmeans.counts.sum()) > float(before.sum())
    method.on_step_end(0.5)  # frozen from here on
    frozen = method.kmeans.centres.clone(), method.kmeans.counts.clone()
    method.training_step({"audio": torch.randn(4, 8000)})
    assert torch.equal(method.kmeans.centres, frozen[0])
    assert torch.equal(method.kmeans.counts, frozen[1])
    # the fitting state and the centres travel in the checkpoint
    state = method.state_dict()
    assert {"fitting", "kmeans.centres", "kmeans.counts", "kmeans.seeded"} <= set(state)
    fresh = _hubert(kmeans_fraction=0.5)
    fresh.load_state_dict(state)
    assert not bool(fresh.fitting) and torch.equal(fresh.kmeans.centres, frozen[0])


def test_data2vec_on_speech_takes_the_papers_speech_settings() -> None:
    encoder = build_encoder(
        "wav2vec2-tiny", sample_rate=8000, conv_dim=16, embed_dim=32, depth=3, num_heads=2
    )
    info = DataInfo(modality="audio", sample_rate=8000, max_samples=8000)
    method = build_method("data2vec", {}, encoder, info)
    assert method.top_k == 2  # 8 of 12 blocks -> 2 of 3
    assert (method.target_norm, method.final_norm) == ("instance", "none")
    assert method.loss.beta == 0.0 and method.loss.scale is None  # MSE, 1/sqrt(D)
    # its target is the instance-normalised average of the teacher's top blocks
    layers = [torch.randn(2, 7, 4) for _ in range(3)]
    want = (
        sum(
            (t - t.mean(1, keepdim=True)) / (t.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt()
            for t in layers[1:]
        )
        / 2
    )
    got = data2vec_targets(layers, top_k=2, norm="instance", final_norm="none")
    assert torch.allclose(got, want, atol=1e-5)
    torch.manual_seed(0)
    out = method.training_step({"audio": torch.randn(4, 8000)})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["features"].shape == (4, 32)
    assert method.encoder.feature_encoder.convs[0].weight.grad is not None
