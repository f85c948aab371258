"""Synthetic speech from espeak-ng: how text is cut and voiced, rendering into the cache (once,
deterministically), clear errors through the CLI, and a tiny pretraining on espeak speech that
evaluates on other (recorded) audio."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

sf = pytest.importorskip("soundfile", reason="audio needs soundfile: pip install selfsup[audio]")

from selfsup.cli import main  # noqa: E402
from selfsup.data import espeak  # noqa: E402
from selfsup.data.audio import load_audio  # noqa: E402
from selfsup.data.espeak import MAX_CHARS, draw_voice, parse_spec, pieces  # noqa: E402
from selfsup.errors import SelfsupError  # noqa: E402

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed: apt-get install espeak-ng",
)
LINES = [
    "Thank you for calling.",
    "Please hold the line.",
    "The quick brown fox jumps over the lazy dog.",
    "Good morning, how can I help you?",
    "Your call is important to us.",
    "Press one for sales.",
    "Press two for support.",
    "Goodbye.",
    "Please enter your account number, followed by the pound key.",
    "All of our agents are busy.",
]


@pytest.fixture
def lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A .txt of short sentences, and a fresh selfsup cache."""
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(LINES) + "\n")
    return path


def test_text_is_cut_at_sentences_then_words() -> None:
    text = "One two.  Three\nfour five!   " + "word " * 40 + "x" * 300
    out = pieces(text, max_chars=30)
    assert all(0 < len(p) <= 30 for p in out)
    assert " ".join(out).replace(" ", "") == text.replace(" ", "").replace("\n", "")
    assert out[0] == "One two. Three four five!"  # two sentences packed into one piece
    assert all(p == "word " * 5 + "word" or p.startswith(("word", "x")) for p in out[1:])
    assert pieces("   ") == [] and pieces("Short.") == ["Short."]
    assert max(len(p) for p in pieces(" ".join(LINES * 20))) <= MAX_CHARS


def test_spec_options_and_voices_are_drawn_by_seed() -> None:
    assert parse_spec("text:/a:b.txt:voices=en,fr:copies=3") == (
        "text:/a:b.txt",
        {"voices": "en,fr", "copies": "3"},
    )
    assert parse_spec("") == ("", {}) and parse_spec("copies=2") == ("", {"copies": "2"})
    with pytest.raises(SelfsupError, match="unknown espeak option 'speed'"):
        parse_spec("fortunes:speed=3")
    with pytest.raises(SelfsupError, match="espeak:text:FILE:voices=de"):
        load_audio("espeak:de", "train")
    draws = {draw_voice("en", f"text {i}", 0, seed=0) for i in range(200)}
    assert len({voice for voice, _, _ in draws}) == len(espeak.VARIANTS)  # every variant used
    assert all(v.startswith("en-us") for v, _, _ in draws)
    assert draw_voice("fr", "Bonjour.", 1, 0) == draw_voice("fr", "Bonjour.", 1, 0)
    assert draw_voice("fr", "Bonjour.", 1, 0) != draw_voice("fr", "Bonjour.", 1, 7)


@needs_espeak
@pytest.mark.parametrize("rate", [8000, 16000])
def test_lines_are_spoken_at_the_runs_rate_with_labels_and_transcripts(
    lines: Path, rate: int
) -> None:
    spec = f"espeak:text:{lines}:voices=en,ru:copies=2"
    train, test = (
        load_audio(spec, split, sample_rate=rate, max_seconds=6.0) for split in ("train", "test")
    )
    assert len(train) + len(test) == 2 * len(LINES)  # each line twice, in one split
    assert set(train.transcripts) | set(test.transcripts) == set(LINES)
    assert not set(train.transcripts) & set(test.transcripts)
    assert train.class_names == ["en", "ru"] and set(train.labels().tolist()) <= {0, 1}
    for i in range(len(train)):
        wave = train[i]["audio"]
        voiced = wave[~wave.isnan()]
        assert wave.shape == (6 * rate,) and wave.dtype == torch.float32
        assert 0.5 * rate < len(voiced) < 6 * rate  # a short sentence, then NaN padding
        assert voiced.abs().max() > 0.05 and voiced.abs().max() <= 1.0
    # the two copies of a line are two different voices
    first = [i for i, t in enumerate(train.transcripts) if t == train.transcripts[0]]
    assert len({train.paths[i] for i in first}) == 2


@needs_espeak
def test_a_labelled_text_is_spoken_in_the_language_its_label_names(
    lines: Path, tmp_path: Path
) -> None:
    jsonl = tmp_path / "multilingual.jsonl"
    rows = [("en", line) for line in LINES] + [
        ("de", f"Guten Morgen, Nummer {i}.") for i in range(10)
    ]
    jsonl.write_text("".join(json.dumps({"text": t, "label": lang}) + "\n" for lang, t in rows))
    spoken = load_audio(f"espeak:text:{jsonl}:voices=label", "train", sample_rate=8000)
    assert spoken.class_names == ["de", "en"]
    language = dict((t, lang) for lang, t in rows)
    assert [spoken.class_names[y] for y in spoken.labels()] == [
        language[t] for t in spoken.transcripts
    ]
    assert {t.startswith("Guten") for t in spoken.transcripts} == {True, False}
    with pytest.raises(SelfsupError, match="voices=label needs labelled text"):
        load_audio(f"espeak:text:{lines}:voices=label", "train")


@needs_espeak
def test_speech_is_rendered_once_and_deterministically(
    lines: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = f"espeak:text:{lines}:voices=en,fr"
    first = load_audio(spec, "train", sample_rate=8000)
    stamps = [p.stat().st_mtime_ns for p in first.paths]

    def no_render(*args: object, **kwargs: object) -> None:
        raise AssertionError("rendered again")

    monkeypatch.setattr(espeak, "render", no_render)
    again = load_audio(spec, "train", sample_rate=8000)
    assert again.paths == first.paths and [p.stat().st_mtime_ns for p in again.paths] == stamps
    monkeypatch.undo()
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "other-cache"))
    elsewhere = load_audio(spec, "train", sample_rate=8000)
    assert [p.name for p in elsewhere.paths] == [p.name for p in first.paths]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first.paths, elsewhere.paths))
    assert elsewhere.labels().tolist() == first.labels().tolist()
    seeded = load_audio(spec + ":seed=1", "train", sample_rate=8000)
    assert [p.name for p in seeded.paths] != [p.name for p in first.paths]


@needs_espeak
@pytest.mark.skipif(
    not espeak.asterisk_transcript_file("en").is_file(),
    reason="the Asterisk transcripts are not installed: apt-get install asterisk-core-sounds-en",
)
def test_asterisk_transcripts_are_spoken_in_their_split(lines: Path) -> None:
    from selfsup.data.split import in_test_split

    spoken = load_audio("espeak:en:max=6", "test", sample_rate=8000)
    assert spoken.class_names == ["en"] and spoken.labels().tolist() == [0] * len(spoken)
    assert all(in_test_split(key.partition("#")[0], 0.2) for key in spoken.keys)
    assert all(t and "(" not in t for t in spoken.transcripts)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_missing_espeak_and_empty_text_are_one_line(
    lines: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pretrain = ["pretrain", "--method", "wav2vec2", "--max-steps", "1", "--no-eval"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    code, err = _cli(
        capsys, *pretrain, "--data", f"espeak:text:{empty}", "--out", str(tmp_path / "a")
    )
    assert code == 2 and "no text" in err and len(err.strip().splitlines()) == 1, err
    code, err = _cli(
        capsys, *pretrain, "--data", f"espeak:text:{lines}:copies=x", "--out", str(tmp_path / "b")
    )
    assert code == 2 and "copies='x'" in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on it
    code, err = _cli(
        capsys, *pretrain, "--data", f"espeak:text:{lines}", "--out", str(tmp_path / "c")
    )
    assert code == 2 and "`sudo apt-get install espeak-ng`" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@needs_espeak
def test_pretrains_on_espeak_and_evaluates_on_recordings(
    lines: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """wav2vec2-tiny, 2 steps on spoken lines; the probes read a folder of recorded tones
    (``eval.data``), never the synthetic speech."""
    recorded = tmp_path / "recorded"
    rng = np.random.default_rng(0)
    for label, freq in (("low", 220.0), ("high", 880.0)):
        (recorded / label).mkdir(parents=True)
        for i in range(10):
            t = np.arange(int(8000 * (0.3 + 0.02 * i))) / 8000
            wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
            sf.write(recorded / label / f"{i}.wav", wave.astype(np.float32), 8000)
    out = tmp_path / "run"
    code, err = _cli(
        capsys, "pretrain", "--method", "wav2vec2", "--encoder", "wav2vec2-tiny",
        "--data", f"espeak:text:{lines}:voices=en,es", "--set", f"eval.data=audio:{recorded}",
        "--set", "data.sample_rate=8000", "--set", "data.max_seconds=0.5",
        "--set", "encoder_args.conv_dim=16", "--set", "encoder_args.embed_dim=32",
        "--set", "encoder_args.depth=1", "--set", "method_args.num_negatives=10",
        "--set", "eval.label_fractions=[1.0]", "--set", "eval.seeds=[0]",
        "--set", "eval.report=false", "--set", "train.progress=false",
        "--batch-size", "4", "--max-steps", "2", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert (out / "encoder.safetensors").is_file()
    assert len(os.listdir(Path(os.environ["SELFSUP_CACHE"]) / "espeak")) >= 6  # it spoke
    rows = json.loads((out / "eval.json").read_text())
    assert {row["encoder"] for row in rows} >= {"wav2vec2", "random-init"}
    assert any(row.get("features") == "mfcc-stats" for row in rows)
    probes = [row for row in rows if "num_test" in row]
    assert probes and all(row["data"] == f"audio:{recorded}" for row in probes)
    assert all(row["num_train"] + row["num_test"] == 20 for row in probes)  # the 20 tones
