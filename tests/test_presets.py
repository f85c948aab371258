"""Every shipped preset (``selfsup/configs/*.yaml``, found by glob) loads through ``--config``
and trains one optimizer step end to end, and opens with the command that reproduces it.

A step is made cheap without changing what the preset is: 1 step, batch 8, no evaluation.
The presets' data sets may be missing on a machine, so each run reads a tiny stand-in of the
same modality and shape (28 px grayscale arrays for Fashion-MNIST, labelled JSONL for the
fortunes, 32 px colour PNGs for openclipart): the preset's method, encoder, augment and
method_args are what is exercised. One preset per data set also runs on the real data,
skipped where it is not installed.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.api import Run, pretrain
from selfsup.cli import PRESETS, _preset, build_parser
from selfsup.config import load_yaml
from selfsup.errors import SelfsupError

PRESET_FILES = sorted(PRESETS.glob("*.yaml"))
ONE_STEP = [
    "train.max_steps=1",
    "train.max_time=null",
    "train.batch_size=8",
    "train.progress=false",
]
SAMPLES = 40  # per stand-in; ~20% go to the test split, and a batch is 8


def _data_set(path: Path) -> str:
    """The data set a preset names, without a ``:FOLDER`` argument."""
    return str(load_yaml(path)["data"]["name"]).split(":")[0]


def _fashion_mnist(folder: Path) -> str:
    """28×28 grayscale uint8 images with 10 classes, as Fashion-MNIST."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (SAMPLES, 28, 28), dtype=np.uint8)
    np.savez(folder / "fashion.npz", images=images, labels=np.arange(SAMPLES) % 10)
    return f"npz:{folder / 'fashion.npz'}"


def _fortunes(folder: Path) -> str:
    """Short labelled English texts, as the fortune cookies."""
    rng = np.random.default_rng(0)
    words = "the a man who knows never says what he thinks of love and money in time".split()
    path = folder / "fortunes.jsonl"
    with path.open("w") as f:
        for i in range(SAMPLES):
            text = " ".join(rng.choice(words, size=12))
            f.write(json.dumps({"text": text, "label": f"category{i % 4}"}) + "\n")
    return f"text:{path}"


def _openclipart(folder: Path) -> str:
    """Colour PNGs in category subfolders, as openclipart's rendered drawings (at a size the
    preset's image_size resizes)."""
    rng = np.random.default_rng(0)
    for i in range(SAMPLES):
        pixels = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
        (folder / "clipart" / f"category{i % 4}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / "clipart" / f"category{i % 4}" / f"{i}.png")
    return f"folder:{folder / 'clipart'}"


def _asterisk(folder: Path) -> str:
    """Short 8 kHz recordings in language subfolders, as the Asterisk prompts."""
    import soundfile

    rng = np.random.default_rng(0)
    for i in range(SAMPLES):
        (folder / "prompts" / f"lang{i % 4}").mkdir(parents=True, exist_ok=True)
        wave = 0.1 * rng.standard_normal(int(8000 * rng.uniform(0.5, 1.5)))
        soundfile.write(folder / "prompts" / f"lang{i % 4}" / f"{i}.wav", wave, 8000)
    return f"audio:{folder / 'prompts'}"


def _openclipart_pairs(folder: Path) -> str:
    """The openclipart stand-in's PNGs, each with a caption file, as image–text pairs."""
    (folder / "pairs").mkdir()
    _openclipart(folder / "pairs")
    words = "red cat tree house car star blue arrow sign".split()
    for i, png in enumerate(sorted((folder / "pairs" / "clipart").rglob("*.png"))):
        png.with_suffix(".txt").write_text(f"a {words[i % len(words)]} drawing {i}")
    return f"pairs:{folder / 'pairs' / 'clipart'}"


def _wordnet(folder: Path) -> str:
    """A labelled graph with bag-of-words node features, as the WordNet noun graph: a ring
    with chords, 16 binary features a node."""
    rng = np.random.default_rng(0)
    ring = np.arange(SAMPLES)
    src = np.concatenate([ring, ring])
    dst = np.concatenate([(ring + 1) % SAMPLES, (ring + 7) % SAMPLES])
    x = (rng.random((SAMPLES, 16)) < 0.2).astype(np.uint8)
    edges = np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])])
    np.savez(folder / "wordnet.npz", x=x, edge_index=edges, y=ring % 4)
    return f"graph:{folder / 'wordnet.npz'}"


def _python_stdlib(folder: Path) -> str:
    """A small source tree of documented functions in two packages, as the standard library."""
    for i in range(SAMPLES):
        package = folder / "code" / f"package{i % 2}"
        package.mkdir(parents=True, exist_ok=True)
        (package / f"module{i}.py").write_text(
            f'def function{i}(value):\n    """Scale value {i}."""\n    return value * {i}\n'
        )
    return f"code:{folder / 'code'}"


STAND_INS = {
    "fashion-mnist": _fashion_mnist,
    "fortunes": _fortunes,
    "openclipart": _openclipart,
    "asterisk": _asterisk,
    "espeak": _asterisk,
    "openclipart-pairs": _openclipart_pairs,
    "wordnet": _wordnet,
    "python-stdlib": _python_stdlib,
}
"""A tiny source of the same modality and shape for each data set a preset may name that a
machine can lack; the embedded digits need none. A preset on a data set not listed here runs
on its real data, so a new data set that may be missing needs a stand-in here."""


RENDERED_FOR_MINUTES = {"espeak", "python-stdlib"}
"""Data sets made on first use by more work than a one-step test should pay for (the espeak
preset speaks ~10,000 utterances; python-stdlib parses ~1,000 modules and trains a tokenizer
on them, tens of seconds); they are tested at small scale in their own test files
(tests/test_speech_espeak.py, tests/test_code.py)."""


def _first_preset_of_each_stood_in_data_set() -> list[Path]:
    """The presets run un-substituted where their data is installed: one per data set."""
    first: dict[str, Path] = {}
    for path in PRESET_FILES:
        first.setdefault(_data_set(path), path)
    return [first[name] for name in STAND_INS if name in first and name not in RENDERED_FOR_MINUTES]


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("stand-ins")
    return {name: make(folder) for name, make in STAND_INS.items()}


def _holds(ran: object, preset: object) -> bool:
    """Whether a run's config has every value the preset sets (the rest are defaults)."""
    if isinstance(preset, dict):
        return isinstance(ran, dict) and all(_holds(ran.get(k), v) for k, v in preset.items())
    return ran == preset


def _train_one_step(name: str, out: Path, overrides: list[str]) -> Run:
    """``selfsup pretrain --config NAME --no-eval`` with the one-step overrides."""
    run = pretrain(_preset(name), evaluate=False, out=str(out), overrides=ONE_STEP + overrides)
    assert run.train.steps == 1 and list(run.train.losses) == [1]
    assert math.isfinite(run.train.losses[1]), run.train.losses
    assert (run.run_dir / "encoder.safetensors").is_file()
    return run


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.stem)
def test_preset_trains_one_step(path: Path, stand_ins: dict[str, str], tmp_path: Path) -> None:
    data = _data_set(path)
    overrides = [f"data.name={stand_ins[data]}"] if data in stand_ins else []
    run = _train_one_step(path.stem, tmp_path / "run", overrides)
    # the stand-in replaced the data and nothing else: the run is the preset's
    preset, ran = load_yaml(path), load_yaml(run.run_dir / "config.yaml")
    for section in ("method", "encoder", "encoder_args", "method_args"):
        assert _holds(ran.get(section), preset.get(section, {})), section


@pytest.mark.parametrize("path", _first_preset_of_each_stood_in_data_set(), ids=lambda p: p.stem)
def test_preset_trains_one_step_on_its_real_data(path: Path, tmp_path: Path) -> None:
    try:
        _train_one_step(path.stem, tmp_path / "run", [])
    except SelfsupError as e:  # the loaders' message for missing data says how to install it
        if "apt-get install" not in str(e):
            raise
        pytest.skip(str(e))


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.stem)
def test_preset_opens_with_the_command_that_reproduces_it(path: Path) -> None:
    """STYLE.md habit 7: the first line says what the preset reproduces and the exact command,
    in backquotes: `selfsup pretrain --config NAME` (or `selfsup NAME` for a command that runs
    the preset of its own name, as `selfsup demo`)."""
    first = path.read_text().splitlines()[0]
    commands = re.findall(r"`(selfsup [^`]+)`", first)
    assert first.startswith("# ") and commands, f"{path.name}: {first!r}"
    args = build_parser().parse_args(shlex.split(commands[0])[1:])
    assert _preset(getattr(args, "config", None) or args.command) == path
