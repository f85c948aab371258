"""Speech: audio sources, log-mel/MFCC features, span masking, the Gumbel quantizer, the
wav2vec 2.0 losses (each against a slow reference written the obvious way), the encoder, the
method and a tiny CLI run with bad input."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sf = pytest.importorskip("soundfile", reason="audio needs soundfile: pip install selfsup[audio]")

from selfsup.data.audio import (  # noqa: E402
    ASTERISK_ROOT,
    load_audio,
    resample_ratio,
    split_padding,
)
from selfsup.data.info import DataInfo  # noqa: E402
from selfsup.encoders import build_encoder  # noqa: E402
from selfsup.encoders.quantizer import GumbelQuantizer  # noqa: E402
from selfsup.errors import SelfsupError  # noqa: E402
from selfsup.losses.wav2vec2 import (  # noqa: E402
    Wav2Vec2ContrastiveLoss,
    diversity_loss,
    sample_distractors,
)
from selfsup.methods import build_method  # noqa: E402
from selfsup.methods.wav2vec2 import Wav2Vec2Config, gumbel_temperature  # noqa: E402
from selfsup.modalities import MODALITIES, modality_of_data  # noqa: E402
from selfsup.views.masking import span_mask  # noqa: E402
from selfsup.views.spectrogram import log_mel, mfcc, mfcc_stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tone(seconds: float, freq: float, rate: int = 8000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def speech_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two labelled folders of short tones at 8 kHz, with transcripts."""
    root = tmp_path_factory.mktemp("speech")
    for label, freq in (("low", 220.0), ("high", 880.0)):
        (root / label).mkdir()
        for i in range(12):
            sf.write(root / label / f"{i}.wav", tone(0.3 + 0.05 * i, freq, seed=i), 8000)
            (root / label / f"{i}.txt").write_text(f"{label} {i}")
    return root


# ---------------------------------------------------------------- features


def reference_log_mel(wave: np.ndarray, rate: int, n_mels: int = 40) -> np.ndarray:
    """Frame by frame: reflect-pad, Hann window, |rFFT|², triangles on the HTK mel scale."""
    win, hop = round(rate * 0.025), round(rate * 0.010)
    n_fft = 1
    while n_fft < win:
        n_fft *= 2
    padded = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
    hann = np.array([0.5 - 0.5 * math.cos(2 * math.pi * i / win) for i in range(win)])
    left = (n_fft - win) // 2
    window = np.zeros(n_fft)
    window[left : left + win] = hann

    def mel(f: float) -> float:
        return 2595 * math.log10(1 + f / 700)

    def hz(m: float) -> float:
        return 700 * (10 ** (m / 2595) - 1)

    points = [hz(mel(rate / 2) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    freqs = [rate / 2 * k / (n_fft // 2) for k in range(n_fft // 2 + 1)]
    bank = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, mid, hi = points[m], points[m + 1], points[m + 2]
        for k, f in enumerate(freqs):
            if lo <= f <= mid:
                bank[m, k] = (f - lo) / (mid - lo)
            elif mid < f <= hi:
                bank[m, k] = (hi - f) / (hi - mid)
    frames = []
    for start in range(0, len(wave) + 1, hop):
        chunk = padded[start : start + n_fft] * window
        power = np.abs(np.fft.rfft(chunk)) ** 2
        frames.append(np.log(bank @ power + 1e-6))
    return np.array(frames)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_log_mel_and_mfcc_match_the_obvious_computation(rate: int) -> None:
    wave = tone(0.25, 440.0, rate) + tone(0.25, 1800.0, rate, seed=3)
    expected = reference_log_mel(wave, rate)
    got = log_mel(torch.from_numpy(wave)[None], rate)[0].double().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-3)
    n = expected.shape[1]
    dct = np.array(
        [
            [
                math.sqrt((1 if k == 0 else 2) / n) * math.cos(math.pi * k * (i + 0.5) / n)
                for k in range(13)
            ]
            for i in range(n)
        ]
    )
    ours = mfcc(torch.from_numpy(wave)[None], rate)[0].double().numpy()
    np.testing.assert_allclose(ours, expected @ dct, atol=1e-2, rtol=1e-3)


def test_mfcc_stats_ignore_the_padding() -> None:
    wave = torch.from_numpy(tone(0.5, 300.0))
    padded = torch.cat([wave, torch.full((2000,), float("nan"))])[None]
    alone = mfcc_stats(wave[None], torch.zeros(1, 4000, dtype=torch.bool), 8000)
    with_pad = mfcc_stats(*split_padding(padded), 8000)
    torch.testing.assert_close(with_pad, alone, atol=0.05, rtol=0.02)


# ---------------------------------------------------------------- span masking


def reference_span_mask(
    n: int, rng: np.random.Generator, p: float = 0.065, span: int = 10
) -> np.ndarray:
    """fairseq's compute_mask_indices for one row, written plainly."""
    spans = max(2, int(p * n + rng.random()))
    high = n - span if n - span > spans else spans + 1
    starts = rng.choice(high, spans, replace=False)
    mask = np.zeros(n, dtype=bool)
    for s in starts:
        for offset in range(span):
            if s + offset < n:
                mask[s + offset] = True
    return mask


def test_span_mask_follows_the_rule_on_large_samples() -> None:
    n, rows = 200, 1500
    rng = np.random.default_rng(0)
    ref = np.stack([reference_span_mask(n, rng) for _ in range(rows)])
    g = torch.Generator().manual_seed(0)
    ours = torch.cat(
        [span_mask(torch.zeros(1, n, dtype=torch.bool), generator=g) for _ in range(rows)]
    ).numpy()
    # about half the frames: 1 - (1 - 0.065)^10 = 0.49 away from the ends
    assert abs(ours.mean() - ref.mean()) < 0.01
    assert 0.45 < ours.mean() < 0.52
    assert abs(ours.sum(1).std() - ref.sum(1).std()) < 0.1 * ref.sum(1).std()
    profile, ref_profile = ours.mean(0), ref.mean(0)  # frame by frame
    assert np.abs(profile - ref_profile).max() < 0.08
    # runs are whole spans (merged when they overlap), except where they meet the end
    for row in ours[:200]:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])))
        lengths = edges[1::2] - edges[::2]
        assert (lengths >= 10).all()


def test_span_mask_rows_hide_equal_counts_and_never_padding() -> None:
    padding = torch.zeros(6, 120, dtype=torch.bool)
    padding[1, 70:] = True
    padding[4, 40:] = True
    mask = span_mask(padding, generator=torch.Generator().manual_seed(1))
    counts = mask.sum(1)
    assert (counts == counts[0]).all() and counts[0] >= 2
    assert not (mask & padding).any()


# ---------------------------------------------------------------- quantizer and losses


def test_distractors_are_other_frames_uniformly() -> None:
    g = torch.Generator().manual_seed(0)
    idx = sample_distractors(2, 5, 20000, generator=g)
    own = torch.arange(5).view(1, 5, 1)
    assert not (idx == own).any()
    freq = torch.stack([(idx[0, 0] == j).float().mean() for j in range(1, 5)])
    torch.testing.assert_close(freq, torch.full((4,), 0.25), atol=0.02, rtol=0)


def reference_contrastive(c, q, idx, kappa):
    total, count = 0.0, 0
    B, M, _ = c.shape
    for b in range(B):
        for t in range(M):
            logits = [F.cosine_similarity(c[b, t], q[b, t], dim=0) / kappa]
            for j in idx[b, t].tolist():
                if torch.equal(q[b, j], q[b, t]):
                    logits.append(torch.tensor(float("-inf")))
                else:
                    logits.append(F.cosine_similarity(c[b, t], q[b, j], dim=0) / kappa)
            logits = torch.stack(logits)
            total = total - torch.log_softmax(logits, dim=0)[0]
            count += 1
    return total / count


@pytest.mark.parametrize("kappa", [0.1, 0.5])
def test_contrastive_loss_matches_the_reference(kappa: float) -> None:
    g = torch.Generator().manual_seed(0)
    c = torch.randn(2, 6, 8, generator=g, dtype=torch.float64)
    q = torch.randn(2, 6, 8, generator=g, dtype=torch.float64)
    q[0, 3] = q[0, 1]  # a repeated code: never its own distractor
    idx = sample_distractors(2, 6, 7, generator=g)
    got = Wav2Vec2ContrastiveLoss(kappa)(c, q, idx)
    torch.testing.assert_close(
        got.double(), reference_contrastive(c, q, idx, kappa), rtol=1e-5, atol=1e-5
    )


def test_diversity_loss_matches_the_reference() -> None:
    probs = torch.softmax(torch.randn(2, 7, generator=torch.Generator().manual_seed(0)), -1)
    perplexity = sum(
        math.exp(-sum(p * math.log(p + 1e-7) for p in probs[g].tolist())) for g in range(2)
    )
    assert diversity_loss(probs).item() == pytest.approx((14 - perplexity) / 14, rel=1e-5)
    assert diversity_loss(torch.full((2, 7), 1 / 7)).item() == pytest.approx(0, abs=1e-5)
    collapsed = torch.zeros(2, 7)
    collapsed[:, 0] = 1
    assert diversity_loss(collapsed).item() == pytest.approx(12 / 14, abs=1e-5)


def test_gumbel_quantizer_picks_one_entry_per_codebook() -> None:
    torch.manual_seed(0)
    quantizer = GumbelQuantizer(in_dim=6, groups=2, entries=5, dim=8)
    z = torch.randn(30, 6, requires_grad=True)
    q, mean_probs, codes = quantizer(z, tau=2.0)
    expected = torch.cat(
        [quantizer.codebooks[g, codes[:, g]] for g in range(2)], dim=1
    )  # (M, 8): the chosen entries, concatenated
    torch.testing.assert_close(q, expected)
    q.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # straight-through gradient
    logits = quantizer.logits(z).view(30, 2, 5)
    torch.testing.assert_close(mean_probs, logits.softmax(-1).mean(0))
    quantizer.eval()
    _, _, hard = quantizer(z, tau=2.0)
    assert torch.equal(hard, logits.argmax(-1))


def test_gumbel_temperature_anneals_from_2_to_half() -> None:
    cfg = Wav2Vec2Config()
    assert gumbel_temperature(cfg, 0.0) == pytest.approx(2.0)
    assert gumbel_temperature(cfg, 0.35) == pytest.approx(1.0)  # geometric: halfway = sqrt
    assert gumbel_temperature(cfg, 0.7) == pytest.approx(0.5)
    assert gumbel_temperature(cfg, 1.0) == pytest.approx(0.5)


# ---------------------------------------------------------------- encoder and method


def tiny_wav2vec2(**method_args):
    encoder = build_encoder(
        "wav2vec2-tiny", sample_rate=8000, conv_dim=16, embed_dim=32, depth=2, num_heads=2
    )
    info = DataInfo(modality="audio", sample_rate=8000, max_samples=4000)
    args = {"num_negatives": 10, "codebook_entries": 16, "codevector_dim": 16, **method_args}
    return build_method("wav2vec2", args, encoder, info)


def test_encoder_pools_only_the_real_frames() -> None:
    torch.manual_seed(0)
    encoder = build_encoder(
        "wav2vec2-tiny", sample_rate=8000, conv_dim=16, embed_dim=32, depth=1, num_heads=2
    ).eval()
    wave = torch.randn(1, 2400)
    padded = torch.cat([wave, torch.full((1, 1600), float("nan"))], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(encoder(padded), encoder(wave), atol=1e-4, rtol=1e-4)
    assert encoder(MODALITIES["audio"].tiny_batch(4)["audio"]).shape == (4, 32)


def test_wav2vec2_step_trains_and_scales_the_feature_gradient() -> None:
    batch = MODALITIES["audio"].tiny_batch(4)
    grads = {}
    for scale in (1.0, 0.1):
        torch.manual_seed(0)
        method = tiny_wav2vec2(feature_grad_scale=scale)
        torch.manual_seed(1)
        out = method.training_step(batch)
        out["loss"].backward()
        grads[scale] = method.encoder.feature_encoder.convs[0].weight.grad.clone()
        assert torch.isfinite(out["loss"])
        assert 0.3 < float(out["masked_share"]) < 0.8
        assert out["features"].shape == (4, 32)
    torch.testing.assert_close(grads[0.1], 0.1 * grads[1.0], rtol=1e-4, atol=1e-7)


def test_wav2vec2_loss_falls_on_a_fixed_batch() -> None:
    """Chirps (pitch rising at a random rate) make masked frames predictable from their
    neighbours; the contrastive loss falls well below chance, ln(11), within 30 steps."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    t = torch.arange(4000) / 8000
    f0 = 200 + 300 * torch.rand(4, 1, generator=g)
    slope = 1500 + 1000 * torch.rand(4, 1, generator=g)
    batch = {"audio": torch.sin(2 * torch.pi * (f0 * t + slope * t**2 / 2))}
    method = tiny_wav2vec2()
    opt = torch.optim.AdamW(method.parameters(), lr=1e-3)
    losses = []
    for step in range(30):
        torch.manual_seed(step % 2)  # two fixed masks, so the loss can only fall by learning
        out = method.training_step(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.on_step_end(step / 30)
        losses.append(float(out["contrastive"]))
    assert np.mean(losses[-4:]) < math.log(11) - 0.5, losses


# ---------------------------------------------------------------- data


def test_audio_folder_labels_transcripts_and_split(speech_folder: Path) -> None:
    train = load_audio(f"audio:{speech_folder}", "train", sample_rate=8000, max_seconds=0.5)
    test = load_audio(f"audio:{speech_folder}", "test", sample_rate=8000, max_seconds=0.5)
    assert len(train) + len(test) == 24 and len(test) > 0
    assert train.class_names == ["high", "low"]
    sample = train[0]
    assert sample["audio"].shape == (4000,) and sample["audio"].dtype == torch.float32
    assert train.transcripts is not None and train.transcripts[0].split()[0] in ("high", "low")
    # what the sampler groups batches by: the samples served, cut at max_seconds
    served = [int((~train[i]["audio"].isnan()).sum()) for i in range(len(train))]
    assert train.sample_lengths.tolist() == served and max(served) == 4000 > min(served)
    assert modality_of_data(f"audio:{speech_folder}").name == "audio"


def test_resampling_keeps_the_pitch(speech_folder: Path) -> None:
    data = load_audio(f"audio:{speech_folder}", "train", sample_rate=16000, max_seconds=0.25)
    wave = data[0]["audio"].numpy()
    spectrum = np.abs(np.fft.rfft(wave[~np.isnan(wave)]))
    peak = np.argmax(spectrum) * 16000 / (2 * (len(spectrum) - 1))
    expected = 880 if data.class_names[int(data[0]["label"])] == "high" else 220
    assert abs(peak - expected) < 10
    with pytest.raises(SelfsupError, match="cannot resample 8001 Hz"):
        resample_ratio(8001, 16000, "x.wav")


def test_manifest_with_paths_labels_and_text(speech_folder: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    rows = [
        f'{{"path": "{speech_folder}/{label}/{i}.wav", "label": "{label}", "text": "x"}}'
        for label in ("low", "high")
        for i in range(12)
    ]
    manifest.write_text("\n".join(rows))
    both = [
        load_audio(f"audio:{manifest}", s, sample_rate=8000, max_seconds=0.5)
        for s in ("train", "test")
    ]
    assert sum(len(d) for d in both) == 24 and both[0].class_names == ["high", "low"]
    manifest.write_text('{"label": "a"}\n')
    with pytest.raises(SelfsupError, match="needs a path"):
        load_audio(f"audio:{manifest}", "train")


def test_bad_audio_is_one_clear_error_or_skipped(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    for i in range(30):
        sf.write(root / f"ok{i}.wav", tone(0.3, 300, seed=i), 8000)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00not a wav at all")
    sf.write(root / "empty.wav", np.zeros(0, dtype=np.float32), 8000)
    sf.write(root / "odd.wav", tone(0.3, 300), 8001)
    (root / "notes.mp3").write_bytes(b"ID3")  # not an audio suffix we read: ignored
    loaded = {}
    for split in ("train", "test"):
        try:
            load_audio(f"audio:{root}", split, sample_rate=16000)
        except SelfsupError as error:
            loaded[split] = str(error)
    assert loaded, "the bad files must stop one of the splits"
    message = " ".join(loaded.values())
    assert "--skip-bad" in message and "\n" not in message
    skipped = []
    for split in ("train", "test"):
        data = load_audio(f"audio:{root}", split, sample_rate=16000, skip_bad=True)
        skipped += data.skipped
    assert sorted(skipped) == ["corrupt.wav", "empty.wav", "odd.wav"]


@pytest.mark.skipif(
    not (ASTERISK_ROOT / "en").is_dir(),
    reason="Asterisk prompts not installed: apt-get install asterisk-core-sounds-en-wav",
)
def test_asterisk_prompts_by_language_and_digits() -> None:
    train = load_audio("asterisk:en", "train", sample_rate=8000, max_seconds=1.0)
    test = load_audio("asterisk:en", "test", sample_rate=8000, max_seconds=1.0)
    assert 500 < len(train) + len(test) < 650 and 0.15 < len(test) / (len(train) + len(test)) < 0.25
    assert train.class_names == ["en"]
    assert not set(train.keys) & set(test.keys)
    digits = load_audio("asterisk-digits:en", "train", sample_rate=8000, max_seconds=1.0)
    assert "1" in digits.class_names and digits.transcripts is not None
    one = digits.class_names.index("1")
    i = int((digits.labels() == one).nonzero()[0])
    assert digits.transcripts[i].lower().startswith("one")
    with pytest.raises(SelfsupError, match="apt-get install asterisk-core-sounds-xx-wav"):
        load_audio("asterisk:xx", "train")


def test_cli_pretrains_and_evaluates_on_a_folder(speech_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "selfsup", "pretrain", "--method", "wav2vec2",
        "--encoder", "wav2vec2-tiny", "--data", f"audio:{speech_folder}",
        "--set", "data.sample_rate=8000", "--set", "data.max_seconds=0.5",
        "--set", "encoder_args.conv_dim=16", "--set", "encoder_args.embed_dim=32",
        "--set", "encoder_args.depth=1", "--set", "method_args.num_negatives=10",
        "--set", "eval.label_fractions=[1.0]", "--set", "eval.seeds=[0]", "--set", "eval.report=false",
        "--batch-size", "4", "--max-steps", "2", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "encoder.safetensors").is_file() and (out / "eval.json").is_file()
    rows = (out / "eval.json").read_text()
    assert "mfcc-stats" in rows and "random-init" in rows
    bad = subprocess.run(
        [sys.executable, "-m", "selfsup", "pretrain", "--method", "wav2vec2", "--data",
         f"audio:{tmp_path / 'missing'}", "--max-steps", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr
