"""Time series: the .ts/.npz/CSV readers and their errors, TS2Vec's crops, timestamp masks and
hierarchical contrastive loss against slow references, the dilated encoder's NaN handling,
the SVM protocol, and a tiny end-to-end run from the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfsup.cli import main
from selfsup.data.series import load_series, parse_ts, shipped_sets
from selfsup.encoders import build_encoder
from selfsup.errors import SelfsupError
from selfsup.evaluate.dtw import dtw_distances, nn_dtw_rows
from selfsup.evaluate.svm import svm_accuracy
from selfsup.losses.ts2vec import HierarchicalContrastiveLoss
from selfsup.modalities import modality_of_data
from selfsup.views.series import overlapping_crops, timestamp_mask

TS_TEXT = """# a comment
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
1,2,3,4:5,6,7,8:up
1,?,3:4,5,6:down
9,8,7,6,5:1,2,3,4,5:up
"""


# --- the slow references, written the obvious way ----------------------------------------


def slow_infonce(anchor: torch.Tensor, positive: torch.Tensor, negatives: list) -> torch.Tensor:
    """-log exp(a·p) / (exp(a·p) + sum_n exp(a·n)), one term at a time (float64 in the tests,
    so the reference is exact and differentiable)."""
    pos = torch.exp(anchor @ positive)
    neg = sum(torch.exp(anchor @ n) for n in negatives)
    return -torch.log(pos / (pos + neg))


def slow_instance(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    B, T, _ = z1.shape
    if B == 1:
        return z1.new_zeros(())
    terms = []
    for t in range(T):
        for i in range(B):
            for a, b in ((z1, z2), (z2, z1)):
                others = [z2[j, t] for j in range(B) if j != i] + [
                    z1[j, t] for j in range(B) if j != i
                ]
                negatives = others  # every other series' vectors at this step, both views
                terms.append(slow_infonce(a[i, t], b[i, t], negatives))
    return sum(terms) / len(terms)


def slow_temporal(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    B, T, _ = z1.shape
    if T == 1:
        return z1.new_zeros(())
    terms = []
    for i in range(B):
        for t in range(T):
            for a, b in ((z1, z2), (z2, z1)):
                negatives = [z1[i, s] for s in range(T) if s != t] + [
                    z2[i, s] for s in range(T) if s != t
                ]
                terms.append(slow_infonce(a[i, t], b[i, t], negatives))
    return sum(terms) / len(terms)


def slow_hierarchical(z1, z2, alpha: float, temporal_unit: int) -> torch.Tensor:
    total, levels = z1.new_zeros(()), 0
    while True:
        total = total + alpha * slow_instance(z1, z2)
        if z1.shape[1] == 1:
            return total / (levels + 1)
        if levels >= temporal_unit:
            total = total + (1 - alpha) * slow_temporal(z1, z2)
        levels += 1
        # max over pairs of neighbouring steps, the odd last step dropped
        T = z1.shape[1] // 2
        z1 = torch.stack([torch.maximum(z1[:, 2 * s], z1[:, 2 * s + 1]) for s in range(T)], dim=1)
        z2 = torch.stack([torch.maximum(z2[:, 2 * s], z2[:, 2 * s + 1]) for s in range(T)], dim=1)


@pytest.mark.parametrize("B, T, D", [(3, 5, 4), (2, 8, 3), (1, 4, 2), (4, 1, 3)])
@pytest.mark.parametrize("alpha, unit", [(0.5, 0), (0.3, 1), (1.0, 0)])
def test_hierarchical_loss_matches_the_slow_reference(B, T, D, alpha, unit):
    g = torch.Generator().manual_seed(B * 100 + T)
    z1 = torch.randn(B, T, D, generator=g, dtype=torch.float64) * 0.7
    z2 = torch.randn(B, T, D, generator=g, dtype=torch.float64) * 0.7
    loss = HierarchicalContrastiveLoss(alpha, unit)(z1, z2)
    assert float(loss) == pytest.approx(
        float(slow_hierarchical(z1, z2, alpha, unit)), rel=1e-6
    )  # the loss runs its softmax in float32


@pytest.mark.parametrize("B, T, alpha, unit", [(2, 6, 0.5, 0), (3, 4, 0.3, 1)])
def test_hierarchical_loss_gradients_match_the_slow_reference(B, T, alpha, unit):
    g = torch.Generator().manual_seed(T)
    z1 = (torch.randn(B, T, 3, generator=g, dtype=torch.float64) * 0.7).requires_grad_()
    z2 = (torch.randn(B, T, 3, generator=g, dtype=torch.float64) * 0.7).requires_grad_()
    fast = torch.autograd.grad(HierarchicalContrastiveLoss(alpha, unit)(z1, z2), (z1, z2))
    slow = torch.autograd.grad(slow_hierarchical(z1, z2, alpha, unit), (z1, z2))
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_loss_rewards_agreeing_views_and_has_gradients():
    z = torch.randn(4, 8, 16)
    loss = HierarchicalContrastiveLoss()
    same = loss(z * 3, z * 3)
    other = loss(z * 3, torch.randn(4, 8, 16) * 3)
    assert same < other
    z1 = z.clone().requires_grad_()
    loss(z1, torch.randn(4, 8, 16)).backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all()


def test_overlapping_crops_share_the_same_steps():
    x = torch.arange(6 * 40, dtype=torch.float32).reshape(6, 40, 1)  # value = its own position
    for seed in range(20):
        crops = overlapping_crops(x, generator=torch.Generator().manual_seed(seed))
        n = crops.overlap
        assert 2 <= n <= 40 and crops.first.shape[1] >= n and crops.second.shape[1] >= n
        shared = x[torch.arange(6)[:, None], crops.starts[:, None] + torch.arange(n)]
        torch.testing.assert_close(crops.first[:, -n:], shared)
        torch.testing.assert_close(crops.second[:, :n], shared)
        # each row is one contiguous window of the series (no wrap-around)
        for view in (crops.first, crops.second):
            assert (view.diff(dim=1) == 1).all()
        # the shared part is the first view's end and the second view's start, nothing more:
        # the two views together cover [a1, b2) of each (shifted) series
        assert crops.first.shape[1] + crops.second.shape[1] - n <= 40


def test_overlapping_crops_draw_every_overlap_length():
    x = torch.zeros(2, 6, 1)
    lengths = {
        overlapping_crops(x, generator=torch.Generator().manual_seed(s)).overlap for s in range(200)
    }
    assert lengths == {2, 3, 4, 5, 6}  # uniform on [2**(unit+1), T]
    with pytest.raises(SelfsupError, match="too short"):
        overlapping_crops(torch.zeros(2, 3, 1), temporal_unit=1)


def test_timestamp_mask_hides_each_step_with_probability_p():
    torch.manual_seed(0)
    mask = timestamp_mask(200, 500, 0.5)
    assert mask.dtype == torch.bool and mask.shape == (200, 500)
    assert abs(mask.float().mean().item() - 0.5) < 0.005  # 100,000 draws: 5 sigma is 0.008
    assert not timestamp_mask(10, 10, 0.0).any()


def test_timestamp_masks_are_independent_bernoulli_draws():
    torch.manual_seed(1)
    mask = timestamp_mask(4000, 40, 0.3).double()  # (B, T)
    counts = mask.sum(dim=1)  # hidden steps per series: Binomial(40, 0.3), variance 8.4
    assert abs(counts.mean().item() - 12.0) < 0.15 and abs(counts.var().item() - 8.4) < 0.8
    lag = torch.corrcoef(torch.stack([mask[:, :-1].flatten(), mask[:, 1:].flatten()]))[0, 1]
    rows = torch.corrcoef(torch.stack([mask[:-1].flatten(), mask[1:].flatten()]))[0, 1]
    assert abs(lag) < 0.02 and abs(rows) < 0.02  # no runs over time, nothing shared by rows
    with pytest.raises(SelfsupError, match=r"lie in \[0, 1\)"):
        timestamp_mask(2, 2, 1.0)


def test_a_timestamp_mask_zeroes_exactly_the_hidden_projected_steps():
    """The slow reference: project each step by hand, zero it where the mask or a NaN hides
    it, and run the same blocks."""
    torch.manual_seed(0)
    encoder = build_encoder(
        "ts2vec-dilated", in_channels=2, width=6, embed_dim=5, depth=2, dropout=0.0
    ).eval()
    x = torch.randn(2, 9, 2)
    x[1, 3, 0] = float("nan")
    mask = timestamp_mask(2, 9, 0.5)
    weight, bias = encoder.input_fc.weight, encoder.input_fc.bias
    projected = torch.zeros(2, 9, 6)
    for b in range(2):
        for t in range(9):
            hidden = bool(mask[b, t]) or bool(torch.isnan(x[b, t]).any())
            if not hidden:
                projected[b, t] = weight @ x[b, t] + bias
    with torch.no_grad():
        slow = encoder.blocks(projected.transpose(1, 2)).transpose(1, 2)
        torch.testing.assert_close(encoder.forward_tokens(x, mask), slow)


def test_ts2vec_loss_is_the_crops_masks_and_loss_composed_by_hand():
    """The method's training step against the pipeline written out: the same draws, the
    shared steps cut from each view's features, the slow hierarchical loss."""
    from selfsup.methods import DataInfo, build_method

    encoder = build_encoder(
        "ts2vec-dilated", in_channels=1, width=4, embed_dim=6, depth=1, dropout=0.0
    )
    method = build_method("ts2vec", {}, encoder, DataInfo(modality="series", channels=1))
    x = torch.randn(3, 12, 1)
    torch.manual_seed(7)
    loss = method.training_step({"series": x})["loss"]
    torch.manual_seed(7)
    crops = overlapping_crops(x)
    mask1 = timestamp_mask(3, crops.first.shape[1])
    mask2 = timestamp_mask(3, crops.second.shape[1])
    n = crops.overlap
    z1 = encoder.forward_tokens(crops.first, mask1)[:, crops.first.shape[1] - n :]
    z2 = encoder.forward_tokens(crops.second, mask2)[:, :n]
    slow = slow_hierarchical(z1.double(), z2.double(), 0.5, 0)
    assert loss.item() == pytest.approx(slow.item(), rel=1e-5)


def test_the_encoder_treats_a_hidden_step_as_a_missing_one():
    torch.manual_seed(0)
    encoder = build_encoder("ts2vec-dilated", in_channels=2, width=8, embed_dim=12, depth=3).eval()
    x = torch.randn(3, 20, 2)
    mask = torch.zeros(3, 20, dtype=torch.bool)
    mask[:, 5:9] = True
    holes = x.clone()
    holes[:, 5:9, 1] = float("nan")  # one missing channel hides the step
    torch.testing.assert_close(encoder.forward_tokens(x, mask), encoder.forward_tokens(holes))
    pooled = encoder(holes)
    assert pooled.shape == (3, 12) and torch.isfinite(pooled).all()
    # padding past the end is skipped by the pooling
    padded = torch.cat([x, torch.full((3, 4, 2), float("nan"))], dim=1)
    tokens = encoder.forward_tokens(padded)[:, :20]
    torch.testing.assert_close(encoder(padded), tokens.amax(dim=1))


def test_parse_ts_reads_dimensions_missing_values_and_labels(tmp_path):
    cases, labels, names = parse_ts(TS_TEXT)
    assert [c.shape for c in cases] == [(4, 2), (3, 2), (5, 2)]
    assert math.isnan(cases[1][1, 0]) and cases[2][4, 1] == 5.0
    assert labels == ["up", "down", "up"] and names == ["up", "down"]
    (tmp_path / "Toy_TRAIN.ts").write_text(TS_TEXT)
    (tmp_path / "Toy_TEST.ts").write_text(TS_TEXT.replace(":up\n", ":down\n", 1))
    train = load_series(f"series:{tmp_path / 'Toy_TRAIN.ts'}", "train")
    test = load_series(f"series:{tmp_path}", "test")
    assert train.as_tensor().shape == (3, 5, 2) and train.labels().tolist() == [0, 1, 0]
    assert test.labels().tolist() == [1, 1, 0]
    assert torch.isnan(train.as_tensor()[0, 4]).all()  # padded past the end


@pytest.mark.parametrize(
    "text, message",
    [
        (TS_TEXT.replace("9,8,7", "9,x8,7"), "line 12: 'x8' is not a number"),
        (TS_TEXT.replace("@data\n", ""), "no @data line"),
        (TS_TEXT.replace(":down", ":left"), "label 'left' is not among"),
        (TS_TEXT.replace("5,6,7,8:up", "up"), "dimensions"),
    ],
)
def test_bad_ts_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "Bad_TRAIN.ts"
    path.write_text(text)
    (tmp_path / "Bad_TEST.ts").write_text(TS_TEXT)
    with pytest.raises(SelfsupError, match=message):
        load_series(f"series:{path}")


def test_csv_series_with_labels_and_its_errors(tmp_path):
    path = tmp_path / "s.csv"
    rows = ["label,a,b,c"] + [f"{i % 2},{i},{i + 1},{i + 2}" for i in range(10)]
    path.write_text("\n".join(rows) + "\n")
    train, test = load_series(f"series:{path}", "train"), load_series(f"series:{path}", "test")
    assert len(train) == 8 and len(test) == 2 and train.as_tensor().shape == (8, 3, 1)
    path.write_text("1,2,3\n4,5\n")
    with pytest.raises(SelfsupError, match="line 2: 2 cells where the first row has 3"):
        load_series(f"series:{path}")
    path.write_text("1,2,3\n4,five,6\n")
    with pytest.raises(SelfsupError, match="line 2: 'five' is not a number"):
        load_series(f"series:{path}")


def test_an_all_missing_series_stops_or_is_skipped_and_counted(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(10, 6, 1)).astype(np.float32)
    x[3] = np.nan
    path = tmp_path / "s.npz"
    np.savez(path, x=x, y=np.arange(10) % 2, x_test=x[:4] * 0 + 1, y_test=np.arange(4) % 2)
    with pytest.raises(SelfsupError, match="series 3 has no values"):
        load_series(f"series:{path}")
    kept = load_series(f"series:{path}", skip_bad=True)
    assert len(kept) == 9 and len(kept.skipped) == 1
    assert (
        main(["pretrain", "--method", "ts2vec", "--data", f"series:{path}", "--max-steps", "1"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--skip-bad" in err[0]


EQUAL_TS = """@problemName Even
@equalLength true
@classLabel true a b
@data
1,2,3,4:a
5,6,7,8:b
1,2,3:a
1,x,3,4:b
4,3,2,1:a
"""


def test_ragged_or_non_numeric_ts_cases_stop_or_are_skipped_and_counted(tmp_path):
    path = tmp_path / "Even_TRAIN.ts"
    path.write_text(EQUAL_TS)
    (tmp_path / "Even_TEST.ts").write_text(EQUAL_TS)
    with pytest.raises(SelfsupError, match="line 7: 3 values where the first case has 4 and "):
        load_series(f"series:{path}")
    kept = load_series(f"series:{path}", skip_bad=True)
    assert kept.as_tensor().shape == (3, 4, 1) and kept.labels().tolist() == [0, 1, 0]
    assert len(kept.skipped) == 2
    assert "line 7" in kept.skipped[0] and "line 8: 'x' is not a number" in kept.skipped[1]
    # one case whose dimensions differ in length, where the header wants equal lengths
    path.write_text(EQUAL_TS.replace("1,2,3,4:a", "1,2,3,4:1,2:a", 1))
    with pytest.raises(SelfsupError, match=r"line 5: dimensions of \[2, 4\] values"):
        load_series(f"series:{path}")
    # unequal lengths are what @equalLength false allows: NaN-padded, not an error
    path.write_text(EQUAL_TS.replace("@equalLength true", ""))
    with pytest.raises(SelfsupError, match="line 8"):
        load_series(f"series:{path}")  # the non-numeric cell still is
    path.write_text(EQUAL_TS.replace("@equalLength true", "").replace("1,x,3,4:b\n", ""))
    assert load_series(f"series:{path}").as_tensor().shape == (4, 4, 1)


def test_ragged_or_non_numeric_csv_rows_are_skipped_and_counted_from_the_cli(tmp_path, capsys):
    rows = [f"{i},{i + 1},{i + 2},{i + 3}" for i in range(20)]
    rows[4], rows[9] = "1,2,3", "1,two,3,4"
    path = tmp_path / "s.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(SelfsupError, match="line 5: 3 cells where the first row has 4"):
        load_series(f"series:{path}")
    kept = load_series(f"series:{path}", "train", skip_bad=True)
    test = load_series(f"series:{path}", "test", skip_bad=True)
    assert len(kept) + len(test) == 18 and len(kept.skipped) == 2
    assert "line 10: 'two' is not a number" in kept.skipped[1]
    out = tmp_path / "run"
    args = ["pretrain", "--method", "ts2vec", "--data", f"series:{path}", "--max-steps", "1"]
    args += ["--out", str(out), "--batch-size", "4", "--set", "train.progress=false"]
    args += ["--set", "encoder_args={width: 4, embed_dim: 8, depth: 1}", "--no-eval"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 5: 3 cells" in err[0] and "Traceback" not in err[0]
    assert main([*args, "--skip-bad"]) == 0
    printed = capsys.readouterr()
    assert "skipped 2 unreadable samples" in " ".join((printed.out + printed.err).split())


@pytest.mark.parametrize("suffix", ["_TRAIN.ts", ".csv", ".npy", ".npz"])
def test_an_empty_series_file_is_one_line(tmp_path, suffix, capsys):
    path = tmp_path / f"empty{suffix}"
    path.write_text("")
    (tmp_path / "empty_TEST.ts").write_text("")
    with pytest.raises(SelfsupError, match="is empty"):
        load_series(f"series:{path}")
    args = ["pretrain", "--method", "ts2vec", "--data", f"series:{path}", "--max-steps", "1"]
    assert main([*args, "--out", str(tmp_path / "run"), "--no-eval"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "is empty" in err[0]


def test_ragged_arrays_and_missing_labels_are_one_line(tmp_path):
    path = tmp_path / "ragged.npy"
    np.save(path, np.array([np.zeros(4), np.zeros(3)], dtype=object), allow_pickle=True)
    with pytest.raises(SelfsupError, match="object array .* pad every series with NaN"):
        load_series(f"series:{path}")
    ts = tmp_path / "NoLabel_TRAIN.ts"
    ts.write_text(TS_TEXT.replace("1,?,3:4,5,6:down", "1,2,3"))
    with pytest.raises(SelfsupError, match="line 11: a case with no label after ':'"):
        load_series(f"series:{ts}")


def slow_dtw(a: list, b: list) -> float:
    """Full-window DTW, the O(n·m) table filled cell by cell; a, b are lists of steps (lists
    of channel values)."""
    n, m = len(a), len(b)
    D = [[math.inf] * (m + 1) for _ in range(n + 1)]
    D[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = sum((x - y) ** 2 for x, y in zip(a[i - 1], b[j - 1], strict=True))
            D[i][j] = cost + min(D[i - 1][j - 1], D[i - 1][j], D[i][j - 1])
    return D[n][m]


def observed_steps(series: torch.Tensor) -> list:
    """The steps before the NaN padding, as lists."""
    return [step for step in series.tolist() if not all(math.isnan(v) for v in step)]


@pytest.mark.parametrize("channels", [1, 3])
def test_dtw_matches_the_plain_python_recurrence(channels):
    g = torch.Generator().manual_seed(channels)
    queries = torch.randn(4, 7, channels, generator=g)
    bank = torch.randn(5, 9, channels, generator=g)
    queries[1, 5:] = float("nan")  # a shorter series, NaN-padded
    bank[2, 2:] = float("nan")
    bank[4, 1:] = float("nan")  # one step long
    fast = dtw_distances(queries, bank)
    for i in range(4):
        for j in range(5):
            slow = slow_dtw(observed_steps(queries[i]), observed_steps(bank[j]))
            assert float(fast[i, j]) == pytest.approx(slow, rel=1e-5), (i, j)


@pytest.mark.parametrize("bank_block, pairs_per_batch", [(3, 40), (2, 1), (64, 2_000_000)])
def test_dtw_in_length_sorted_blocks_equals_every_pair_at_full_length(
    bank_block, pairs_per_batch, monkeypatch
):
    from selfsup.evaluate import dtw

    g = torch.Generator().manual_seed(1)
    queries, bank = torch.randn(9, 30, 2, generator=g), torch.randn(7, 25, 2, generator=g)
    for series, lengths in (
        (queries, [30, 3, 17, 5, 30, 1, 8, 12, 29]),
        (bank, [4, 25, 9, 2, 16, 25, 7]),
    ):
        for row, length in enumerate(lengths):
            series[row, length:] = float("nan")
    len_q, len_n = dtw.series_lengths(queries), dtw.series_lengths(bank)
    qi, ni = torch.arange(9).repeat_interleave(7), torch.arange(7).repeat(9)
    every_pair = dtw.dtw_pairs(queries[qi], bank[ni], len_q[qi], len_n[ni]).view(9, 7)
    monkeypatch.setattr(dtw, "BANK_BLOCK", bank_block)
    monkeypatch.setattr(dtw, "PAIRS_PER_BATCH", pairs_per_batch)
    assert torch.equal(dtw.dtw_distances(queries, bank), every_pair)
    assert dtw.dtw_cells(queries, bank) == sum(len_q.tolist()) * sum(len_n.tolist())


def test_dtw_forgives_warping_that_euclid_does_not():
    t = torch.linspace(0, 6, 40)
    bump = torch.exp(-((t - 2) ** 2) * 4)[:, None]  # (40, 1)
    late = torch.exp(-((t - 4) ** 2) * 4)[:, None]  # the same bump, later
    flat = torch.zeros(40, 1)
    distances = dtw_distances(bump[None], torch.stack([late, flat]))[0]
    assert distances[0] < 0.01 < distances[1]  # DTW aligns the bumps
    assert (bump - late).square().sum() > (bump - flat).square().sum()  # Euclid cannot
    # repeating steps is free: a series and its copy with every step doubled
    doubled = bump.repeat_interleave(2, dim=0)[None]
    assert float(dtw_distances(bump[None], doubled)) == 0.0


def test_the_evaluations_dtw_baseline_is_skipped_with_a_line_when_it_would_take_hours(
    tmp_path, monkeypatch
):
    from selfsup.config import EvalConfig
    from selfsup.evaluate import dtw
    from selfsup.modalities import MODALITIES

    rng = np.random.default_rng(0)
    path = tmp_path / "s.npz"
    np.savez(path, x=rng.normal(size=(24, 30, 1)).astype(np.float32), y=np.arange(24) % 2)
    train, test = load_series(f"series:{path}", "train"), load_series(f"series:{path}", "test")
    ev = EvalConfig(label_fractions=(1.0,), seeds=(0,))
    cells = len(train) * len(test) * 30 * 30  # every series 30 steps long
    assert dtw.dtw_cells(stacked(test), stacked(train)) == cells
    lines: list[str] = []
    rows = MODALITIES["series"].raw_baseline(train, test, ev, ["linear"], lines.append)
    assert [r["protocol"] for r in rows] == ["linear", "1nn-dtw"]
    monkeypatch.setattr(dtw, "CELLS_IN_EVALUATION", cells - 1)
    rows = MODALITIES["series"].raw_baseline(train, test, ev, ["linear"], lines.append)
    assert [r["protocol"] for r in rows] == ["linear"]
    assert f"1-NN DTW skipped: {len(test)} × {len(train)} series are {cells:.1e}" in lines[-1]


def stacked(dataset) -> torch.Tensor:
    return torch.stack([dataset[i]["series"] for i in range(len(dataset))])


def test_nn_dtw_rows_at_label_fractions():
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 6, 20)
    shifts = torch.rand(60, generator=g) * 2
    y = torch.arange(60) % 2
    # class 0: one bump, class 1: two bumps; each placed at a random time
    x = torch.stack(
        [
            torch.exp(-((t - 1 - s) ** 2) * 6) + (k == 1) * torch.exp(-((t - 3.5 - s) ** 2) * 6)
            for s, k in zip(shifts, y, strict=True)
        ]
    )[:, :, None]
    rows = nn_dtw_rows((x[:40], y[:40]), (x[40:], y[40:]), [0.25, 1.0], [0, 1])
    assert [(r["encoder"], r["protocol"], r["label_fraction"]) for r in rows] == [
        ("raw", "1nn-dtw", 0.25),
        ("raw", "1nn-dtw", 1.0),
    ]
    assert rows[0]["seeds"] == 2 and rows[0]["num_train"] == 10 and rows[1]["num_train"] == 40
    assert rows[1]["accuracy"] == 1.0
    nearest = [
        int(torch.tensor([slow_dtw(observed_steps(q), observed_steps(b)) for b in x[:40]]).argmin())
        for q in x[40:]
    ]
    assert rows[1]["accuracy"] == float((y[:40][nearest] == y[40:]).double().mean())


def test_svm_protocol_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(90) % 3
    x = torch.randn(90, 4, generator=g) * 0.1 + F.one_hot(y, 4).float()
    result = svm_accuracy(x[:60], y[:60], x[60:], y[60:])
    assert result["accuracy"] == 1.0 and result["C"] in (
        1e-4,
        1e-3,
        1e-2,
        0.1,
        1.0,
        10.0,
        100.0,
        1e3,
        1e4,
        "inf",
    )
    few = svm_accuracy(x[:12], y[:12], x[60:], y[60:])
    assert few["C"] == "inf"  # 4 per class is too few to cross-validate: a hard margin


def test_ts2vec_pretrains_and_evaluates_from_the_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    t = np.linspace(0, 4 * np.pi, 32)
    y = np.arange(64) % 2
    x = np.stack([np.sin(t * (1 + k)) for k in y])[:, :, None] + rng.normal(0, 0.1, (64, 32, 1))
    path = tmp_path / "waves.npz"
    np.savez(path, x=x.astype(np.float32), y=y)
    out = tmp_path / "run"
    args = ["pretrain", "--method", "ts2vec", "--data", f"series:{path}", "--out", str(out)]
    args += ["--batch-size", "8", "--max-steps", "4", "--set", "train.progress=false"]
    args += ["--set", "encoder_args={width: 8, embed_dim: 16, depth: 2}"]
    args += [
        "--set",
        "eval.label_fractions=[1.0]",
        "--set",
        "eval.seeds=[0]",
        "--set",
        "eval.report=false",
    ]
    assert main(args) == 0
    rows = json.loads((out / "eval.json").read_text())
    assert {r["encoder"] for r in rows} == {"ts2vec", "random-init", "raw"}
    dtw = [r for r in rows if r["protocol"] == "1nn-dtw"]
    assert len(dtw) == 1 and dtw[0]["encoder"] == "raw" and dtw[0]["accuracy"] > 0.9
    svm = json.loads((out / "svm.json").read_text())
    assert {r["encoder"] for r in svm} == {"ts2vec", "random-init", "raw"}
    assert all(0.5 <= r["svm_accuracy"] <= 1 for r in svm)
    # a CSV whose header has no label column can pretrain but not be evaluated
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("a,b,c\n" + "\n".join(f"{i},{i},{i}" for i in range(10)) + "\n")
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", f"series:{unlabelled}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no labels, so it cannot be evaluated" in err[0]


def test_series_specs_find_their_modality():
    assert modality_of_data("ucr:GunPoint").name == "series"
    assert modality_of_data("series:x.csv").name == "series"
    with pytest.raises(SelfsupError, match="ucr: takes one of"):
        load_series("ucr:GunPointy")


def test_a_set_is_found_in_whichever_installed_package_ships_it(tmp_path, monkeypatch):
    from selfsup.data import series

    # sktime first (it lacks PickupGestureWiimoteZ), aeon second (it has it)
    for package, name in (("first_pkg", "GunPoint"), ("second_pkg", "PickupGestureWiimoteZ")):
        folder = tmp_path / package / "datasets" / "data" / name
        folder.mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text("")
        for split in ("TRAIN", "TEST"):
            (folder / f"{name}_{split}.ts").write_text(TS_TEXT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(series, "PACKAGES", ("first_pkg", "second_pkg"))
    assert series.archive_file("pickupgesturewiimotez", "test").parts[-5] == "second_pkg"
    assert series.archive_file("GunPoint", "train").parts[-5] == "first_pkg"
    assert len(load_series("ucr:PickupGestureWiimoteZ", "train")) == 3
    with pytest.raises(SelfsupError, match="OSULeaf_TRAIN.ts is missing: OSULeaf ships only"):
        series.archive_file("OSULeaf", "train")


@pytest.mark.skipif("GunPoint" not in shipped_sets(), reason="pip install selfsup[series] (sktime)")
def test_the_shipped_archive_sets_keep_their_splits():
    train, test = load_series("ucr:GunPoint", "train"), load_series("ucr:gunpoint", "test")
    assert (len(train), len(test), train.length, train.channels) == (50, 150, 150, 1)
    motions = load_series("ucr:BasicMotions")
    assert motions.channels == 6 and motions.class_names[0] == "Standing"
