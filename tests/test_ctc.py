"""CTC fine-tuning for speech (``selfsup.evaluate.ctc``): edit distance, error rates and
greedy decoding against the obvious computations, transcripts as the alphabet reads them,
the labelled-minutes subset, and the protocol end to end on a folder of spelled tones."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.config import EvalConfig, make_config
from selfsup.encoders import build_encoder
from selfsup.errors import SelfsupError
from selfsup.evaluate.ctc import (
    ENGLISH,
    Alphabet,
    CTCConfig,
    CTCModel,
    collate_transcribed,
    edit_distance,
    error_rates,
    greedy_decode,
    labelled_minutes,
    normalise,
)

sf = pytest.importorskip("soundfile", reason="audio needs soundfile: pip install selfsup[audio]")


def reference_distance(a, b) -> int:
    """Levenshtein distance by plain recursion over prefixes."""

    @functools.cache
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


def test_edit_distance_and_error_rates_match_the_obvious_computation():
    rng = random.Random(0)
    for _ in range(200):
        a = "".join(rng.choices("ab c", k=rng.randint(0, 9)))
        b = "".join(rng.choices("ab c", k=rng.randint(0, 9)))
        assert edit_distance(a, b) == reference_distance(a, b)
        assert edit_distance(a.split(), b.split()) == reference_distance(a.split(), b.split())
    rates = error_rates(["the cat sat", "a dog"], ["the bat sat", "a dog"])
    assert rates["cer"] == pytest.approx(1 / 16) and rates["wer"] == pytest.approx(1 / 5)
    assert error_rates(["hello"], [""]) == {"cer": 1.0, "wer": 1.0}


def test_greedy_decoding_merges_repeats_drops_blanks_and_stops_at_the_length():
    frames = [[1, 1, 0, 1, 2, 2, 0, 0, 3, 3], [0, 2, 2, 2, 0, 2, 1, 1, 1, 1]]
    scores = torch.nn.functional.one_hot(torch.tensor(frames), 4).float().log_softmax(-1)
    assert greedy_decode(scores, torch.tensor([10, 6])) == [[1, 1, 2, 3], [2, 2]]


def test_transcripts_are_spelled_in_the_alphabet_or_refused_in_one_line():
    assert normalise("Call-Forward on  Busy.") == "call forward on busy"
    assert normalise("Your party's extension, please!") == "your party's extension please"
    alphabet = Alphabet(ENGLISH)
    assert len(alphabet) == 29 and alphabet.decode(alphabet.encode("it's me")) == "it's me"
    with pytest.raises(SelfsupError, match="outside the CTC alphabet: '15'"):
        alphabet.encode("press 1 or 5")
    with pytest.raises(SelfsupError, match="distinct"):
        Alphabet("aab")


def test_the_labelled_minutes_are_a_seeded_subset_of_that_much_audio():
    seconds = [float(s) for s in np.random.default_rng(0).uniform(1, 4, 400)]
    chosen = labelled_minutes(seconds, 2.0, seed=0)
    total = sum(seconds[i] for i in chosen)
    assert 120 <= total < 124 and chosen == labelled_minutes(seconds, 2.0, seed=0)
    assert chosen != labelled_minutes(seconds, 2.0, seed=1)
    assert labelled_minutes(seconds[:3], 60, seed=0) == [0, 1, 2]


WORDS = {"hi": 300.0, "lo": 150.0}


def spelled(word: str, rate: int = 8000, seed: int = 0) -> np.ndarray:
    """A word as a tone per letter (0.12 s each, a pause between), noise on top."""
    rng = np.random.default_rng(seed)
    freq = {"h": 300.0, "i": 900.0, "l": 500.0, "o": 1400.0, " ": 0.0}
    parts = []
    for letter in word:
        t = np.arange(int(0.12 * rate)) / rate
        parts += [0.4 * np.sin(2 * np.pi * freq[letter] * t), np.zeros(int(0.03 * rate))]
    wave = np.concatenate(parts)
    return (wave + 0.01 * rng.standard_normal(len(wave))).astype(np.float32)


@pytest.fixture(scope="module")
def spelled_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Spelled words with their transcripts, in two subfolders (the probes' labels)."""
    root = tmp_path_factory.mktemp("spelled")
    rng = random.Random(0)
    for i in range(60):
        text = " ".join(rng.choices(list(WORDS), k=rng.randint(1, 3)))
        folder = root / ("odd" if i % 2 else "even")
        folder.mkdir(exist_ok=True)
        sf.write(folder / f"{i}.wav", spelled(text, seed=i), 8000)
        (folder / f"{i}.txt").write_text(text.capitalize() + ".")
    return root


def tiny_encoder():
    torch.manual_seed(0)
    return build_encoder(
        "wav2vec2-tiny", sample_rate=8000, conv_dim=16, embed_dim=32, depth=2, num_heads=2
    )


@pytest.mark.parametrize(
    ("rate", "named", "expected"),
    [
        (8000, {}, (0.05, 10)),  # hop 160 at 8 kHz: 20 ms frames, the paper's spans
        (16000, {}, (0.025, 20)),  # 10 ms frames: 200 ms spans, half the start chance
        (16000, {"mask_span": 4}, (0.05, 4)),  # a named span keeps the paper's chance
        (16000, {"mask_start": 0.0}, (0.0, 20)),  # masking off, whatever the span
    ],
)
def test_ctc_masks_spans_of_the_papers_duration_in_the_encoders_frames(rate, named, expected):
    encoder = build_encoder(
        "wav2vec2-tiny", sample_rate=rate, conv_dim=16, embed_dim=32, depth=2, num_heads=2
    )
    assert encoder.hop == 160
    model = CTCModel(encoder, len(Alphabet(ENGLISH)), CTCConfig(**named))
    assert (model.mask_start, model.mask_span) == pytest.approx(expected)


def test_ctc_learns_to_spell_and_the_feature_encoder_stays_frozen(spelled_folder):
    from selfsup.data.audio import load_audio
    from selfsup.evaluate.ctc import Transcribed, transcribed_split

    audio = load_audio(f"audio:{spelled_folder}", "train", sample_rate=8000, max_seconds=1.5)
    rows, ids, _, _ = transcribed_split(audio, Alphabet(ENGLISH), 1.5, skip_bad=False)
    batch = collate_transcribed([Transcribed(audio, rows, ids)[i] for i in range(8)])
    model = CTCModel(tiny_encoder(), len(Alphabet(ENGLISH)), CTCConfig(mask_start=0.0))
    frozen = [p.clone() for p in model.encoder.feature_encoder.parameters()]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model.training_step(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    assert all(
        torch.equal(a, b) for a, b in zip(frozen, model.encoder.feature_encoder.parameters())
    )


def test_the_ctc_protocol_scores_each_encoder_and_refuses_unspellable_transcripts(
    spelled_folder, tmp_path
):
    from selfsup.evaluate.run import evaluate_run

    spec = f"audio:{spelled_folder}"
    cfg = make_config(
        None, (), method="wav2vec2", data={"name": spec, "sample_rate": 8000, "max_seconds": 1.5}
    )
    ev = EvalConfig(
        protocols=("ctc",), ctc_epochs=2, ctc_minutes=0.2, ctc_max_seconds=1.5, report=False
    )
    evaluate_run(tiny_encoder(), spec, cfg=cfg, eval_cfg=ev, out=tmp_path / "e")
    import json

    rows = json.loads((tmp_path / "e" / "ctc.json").read_text())
    assert [r["encoder"] for r in rows] == ["wav2vec2", "random-init"]
    for row in rows:
        assert row["protocol"] == "ctc" and 0 <= row["cer"] and 0 <= row["wer"]
        assert 0.2 <= row["labelled_minutes"] < 0.3 and row["num_test"] > 0

    (spelled_folder / "even" / "0.txt").write_text("Press 5.")
    try:
        with pytest.raises(SelfsupError, match=r"outside the CTC alphabet \('5'\).*--skip-bad"):
            evaluate_run(tiny_encoder(), spec, cfg=cfg, eval_cfg=ev, out=tmp_path / "f")
    finally:
        (spelled_folder / "even" / "0.txt").write_text("Hi.")
