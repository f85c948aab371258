"""Recorded speech: folders and manifests of audio files, the Asterisk telephony prompts, and
synthetic speech spoken by espeak-ng.

A sample is ``{"audio": float32 (T,), "label": int64}`` with T = ``max_seconds`` at the run's
``sample_rate``: the file is decoded with ``soundfile`` in the loader worker, averaged to mono,
resampled (``scipy.signal.resample_poly``), cut to its first ``max_seconds`` and, when shorter,
padded with NaN. The NaN tail *is* the padding mask: it travels with the waveform through
stacking, loaders and feature extraction, which pass one tensor, and every consumer (the
encoder, the MFCC baseline) turns it into a boolean mask and zeros first (``split_padding``).

Sources:
    audio:PATH              a folder of .wav/.flac/.ogg files (first-level subfolder = label,
                            a sibling PATH/x.txt = transcript of PATH/x.wav), or a .csv/.jsonl
                            manifest with ``path`` (relative to the manifest), optional
                            ``label`` and ``text``
    asterisk[:en,fr,...]    the Asterisk prompts of every installed language (or those named),
                            labelled by language
    asterisk-digits[:LANGS] only their ``digits/`` prompts, labelled by the number spoken
    espeak[:LANGS]          synthetic speech: text spoken by espeak-ng, rendered once into the
    espeak:TEXTSPEC         cache (``selfsup.data.espeak``), labelled by language

A file is in the test split when a hash of its relative path (prefixed by the language for
Asterisk) falls in the lowest 20%, so held-out prompts never reach pretraining.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.data.split import in_test_split
from selfsup.errors import SelfsupError, UnreadableFileError

Split = Literal["train", "test"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
TEST_FRACTION = 0.2
ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
ASTERISK_DOCS = Path("/usr/share/doc")
ASTERISK_LANGUAGES = ("en", "es", "fr", "it", "ru")
ASTERISK_INSTALL = (
    "`sudo apt-get install "
    + " ".join(f"asterisk-core-sounds-{lang}-wav" for lang in ASTERISK_LANGUAGES)
    + "`"
)
MAX_RESAMPLE_FACTOR = 1000
"""Largest up- or down-sampling factor (after reducing the ratio) ``resample_poly`` is asked
for: 44.1 kHz -> 16 kHz is 160/441; 8001 Hz -> 16 kHz would be 16000/8001, a filter of a
hundred thousand taps per sample."""
SKIP_HINT = "pass --skip-bad to skip unreadable files"

AUDIO_DATASETS: dict[str, str] = {
    "asterisk": (
        "Asterisk telephony prompts, 8 kHz, ~25 min and 530-600 prompts per language, "
        "labelled by language (asterisk:en,fr for some); "
        f"{ASTERISK_INSTALL}"
    ),
    "asterisk-digits": (
        "the Asterisk digits/ prompts (~100 per language: numbers, 'hundred', 'oh'), labelled "
        "by the word spoken; same install"
    ),
    "espeak": (
        "synthetic speech by espeak-ng, for pretraining volume: espeak[:en,fr] speaks the "
        "Asterisk transcripts of the training split in their languages, espeak:TEXTSPEC any "
        "text source (:voices=en,de or =label :copies=N :max=N :seed=S); rendered once into the cache, "
        "labelled by language; `sudo apt-get install espeak-ng`"
    ),
    "audio": (
        "audio:PATH, a folder of .wav/.flac/.ogg (subfolder = label, same-stem .txt = "
        "transcript) or a .csv/.jsonl manifest with path, label, text; `pip install "
        "selfsup[audio]`"
    ),
}


def soundfile_module() -> Any:
    """``soundfile``, imported when audio is first read; the install hint otherwise."""
    try:
        import soundfile
    except ImportError:  # pragma: no cover - the extra is installed in CI
        raise SelfsupError("reading audio needs soundfile: `pip install selfsup[audio]`") from None
    return soundfile


@dataclass
class AudioFiles:
    """What a source lists before anything is decoded: files, labels, transcripts."""

    paths: list[Path]
    labels: list[int] | None
    class_names: list[str]
    texts: list[str] | None = None
    keys: list[str] = field(default_factory=list)
    """Relative names (the split hash's key; shown in errors)."""


class UnreadableAudioError(UnreadableFileError):
    """A file soundfile cannot decode; keeps one line when re-raised from a loader worker."""


def resample_ratio(source_rate: int, target_rate: int, name: str) -> tuple[int, int]:
    """(up, down) of ``resample_poly`` from ``source_rate`` to ``target_rate``; SelfsupError
    when the reduced ratio needs a factor above ``MAX_RESAMPLE_FACTOR``."""
    if source_rate <= 0:
        raise SelfsupError(f"{name}: sample rate {source_rate} Hz is not a rate")
    g = math.gcd(source_rate, target_rate)
    up, down = target_rate // g, source_rate // g
    if max(up, down) > MAX_RESAMPLE_FACTOR:
        raise SelfsupError(
            f"{name}: cannot resample {source_rate} Hz to {target_rate} Hz (ratio {up}/{down}); "
            f"convert it first, e.g. `sox IN -r {target_rate} OUT.wav`"
        )
    return up, down


def decode(path: Path, sample_rate: int, max_samples: int) -> Tensor:
    """float32 (max_samples,) mono at ``sample_rate``: the first ``max_samples`` of the file,
    NaN after its end. UnreadableAudioError for a file that cannot be read or is empty."""
    sf = soundfile_module()
    try:
        info = sf.info(str(path))
        up, down = resample_ratio(info.samplerate, sample_rate, str(path))
        needed = math.ceil(max_samples * down / up) + 64  # what the crop needs, with filter room
        data, rate = sf.read(str(path), frames=needed, dtype="float32", always_2d=True)
    except SelfsupError:
        raise
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, EOFError ...
        raise UnreadableAudioError(
            f"cannot read audio {path}: {str(error).splitlines()[0]}; {SKIP_HINT}"
        ) from None
    if len(data) == 0:
        raise UnreadableAudioError(f"audio {path} holds no samples; {SKIP_HINT}")
    wave = data.mean(axis=1)  # (T,) mono
    if (up, down) != (1, 1):
        from scipy.signal import resample_poly

        wave = resample_poly(wave, up, down).astype(np.float32)
    out = torch.full((max_samples,), float("nan"))
    n = min(max_samples, len(wave))
    out[:n] = torch.from_numpy(np.ascontiguousarray(wave[:n]))
    return out


def split_padding(wave: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T) waveforms with a NaN tail -> (waveforms with zeros there, bool (B, T) padding)."""
    padding = wave.isnan()
    return wave.masked_fill(padding, 0.0), padding


def _check_file(path: Path, key: str, sample_rate: int) -> str | float:
    """Why ``path`` cannot be used (unreadable header, no samples, rate), or its duration in
    seconds."""
    sf = soundfile_module()
    try:
        info = sf.info(str(path))
    except Exception as error:
        return f"cannot read audio {key}: {str(error).splitlines()[0]}"
    if info.frames <= 0:
        return f"audio {key} holds no samples"
    try:
        resample_ratio(info.samplerate, sample_rate, key)
    except SelfsupError as error:
        return str(error)
    return info.frames / info.samplerate


class AudioDataset(Dataset[dict[str, Tensor]]):
    """Map-style speech: ``{"audio": float32 (T,), "label": int64}``, decoded on access.

    ``skipped`` lists the files dropped with ``skip_bad`` (their headers are checked when the
    data set is built; without ``skip_bad`` the first bad one stops it with its name).
    """

    input_key = "audio"
    in_memory = False

    def __init__(
        self,
        files: AudioFiles,
        *,
        name: str,
        sample_rate: int,
        max_seconds: float,
        skip_bad: bool = False,
    ) -> None:
        self.name = name
        self.sample_rate = sample_rate
        self.max_samples = max(1, round(max_seconds * sample_rate))
        self.skipped: list[str] = []
        self.skips_bad = skip_bad
        """Whether bad recordings (and, for CTC, transcripts it cannot spell) are left out
        and counted instead of stopping: ``--skip-bad``, and always for the Asterisk prompts."""
        keep, seconds = [], []
        for i, (path, key) in enumerate(zip(files.paths, files.keys, strict=True)):
            problem = _check_file(path, key, sample_rate)
            if not isinstance(problem, str):
                keep.append(i)
                seconds.append(problem)
            elif skip_bad:
                self.skipped.append(key)
            else:
                raise SelfsupError(f"{problem}; {SKIP_HINT}")
        self.sample_lengths = np.minimum(
            np.round(np.asarray(seconds, dtype=np.float64) * sample_rate), self.max_samples
        ).astype(np.int64)
        """Samples of each recording as served (cut at ``max_seconds``): the engine's sampler
        batches recordings of similar length together, as fairseq does, so the methods that
        crop a batch to its shortest keep most of the audio."""
        self.paths = [files.paths[i] for i in keep]
        self.keys = [files.keys[i] for i in keep]
        self._labels = [files.labels[i] for i in keep] if files.labels is not None else None
        self.transcripts = [files.texts[i] for i in keep] if files.texts is not None else None
        self.class_names = files.class_names
        self.has_labels = self._labels is not None

    def __len__(self) -> int:
        return len(self.paths)

    def labels(self) -> Tensor:
        """int64 (N,); -1 everywhere for unlabelled data."""
        if self._labels is None:
            return torch.full((len(self),), -1, dtype=torch.long)
        return torch.tensor(self._labels, dtype=torch.long)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        wave = decode(self.paths[index], self.sample_rate, self.max_samples)
        label = self._labels[index] if self._labels is not None else -1
        return {"audio": wave, "label": torch.tensor(label, dtype=torch.long)}


def load_audio(
    spec: str,
    split: Split,
    *,
    sample_rate: int = 16000,
    max_seconds: float = 4.0,
    skip_bad: bool = False,
) -> AudioDataset:
    """One split of the audio source ``spec`` (see ``AUDIO_DATASETS``)."""
    prefix, _, argument = spec.partition(":")
    prefix = prefix.strip().lower()
    if prefix in ("asterisk", "asterisk-digits"):
        files = _split(asterisk_files(argument, digits=prefix == "asterisk-digits"), split)
        skip_bad = True  # asterisk-core-sounds-ru ships an empty prompt, ru/is.wav
    elif prefix == "audio":
        files = _split(user_audio_files(Path(argument).expanduser()), split)
    elif prefix == "espeak":
        from selfsup.data.espeak import espeak_files, speaks_asterisk_transcripts

        files = espeak_files(argument, split)  # one split: only its texts are spoken
        # as for the recordings: CTC leaves out (and counts) the prompts it cannot spell
        skip_bad = skip_bad or speaks_asterisk_transcripts(argument)
    else:
        raise SelfsupError(f"unknown audio source {spec!r}; known: {', '.join(AUDIO_DATASETS)}")
    if not files.paths:
        raise SelfsupError(f"{spec!r} has no audio files in its {split} split")
    return AudioDataset(
        files, name=spec, sample_rate=sample_rate, max_seconds=max_seconds, skip_bad=skip_bad
    )


def _split(files: AudioFiles, split: Split) -> AudioFiles:
    keep = [
        i
        for i, key in enumerate(files.keys)
        if in_test_split(key, TEST_FRACTION) == (split == "test")
    ]
    return AudioFiles(
        paths=[files.paths[i] for i in keep],
        labels=[files.labels[i] for i in keep] if files.labels is not None else None,
        class_names=files.class_names,
        texts=[files.texts[i] for i in keep] if files.texts is not None else None,
        keys=[files.keys[i] for i in keep],
    )


def _audio_under(root: Path) -> list[Path]:
    """Every audio file under ``root`` (links followed, hidden entries skipped), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            Path(dirpath) / f
            for f in filenames
            if not f.startswith(".") and f.lower().endswith(AUDIO_EXTENSIONS)
        ]
    return sorted(found)


def installed_asterisk_languages() -> list[str]:
    return [lang for lang in ASTERISK_LANGUAGES if (ASTERISK_ROOT / lang).is_dir()]


def asterisk_files(languages: str, *, digits: bool) -> AudioFiles:
    """The prompts of ``languages`` (comma-separated; empty = every installed one).

    Labelled by language, or with ``digits`` by the spoken word of the ``digits/`` prompt
    (its file stem), keeping the words every chosen language has.
    """
    chosen = [lang.strip() for lang in languages.split(",") if lang.strip()] or (
        installed_asterisk_languages()
    )
    if not chosen:
        raise SelfsupError(f"no Asterisk prompts installed in {ASTERISK_ROOT}: {ASTERISK_INSTALL}")
    for lang in chosen:
        if not (ASTERISK_ROOT / lang).is_dir():
            raise SelfsupError(
                f"Asterisk prompts for {lang!r} are not installed: "
                f"`sudo apt-get install asterisk-core-sounds-{lang}-wav`"
            )
    per_language = {lang: _audio_under(ASTERISK_ROOT / lang) for lang in chosen}
    if digits:
        per_language = {
            lang: [p for p in paths if p.parent.name == "digits"]
            for lang, paths in per_language.items()
        }
        words = sorted(set.intersection(*({p.stem for p in ps} for ps in per_language.values())))
        class_names, label_of = words, {w: i for i, w in enumerate(words)}
    else:
        class_names, label_of = chosen, {lang: i for i, lang in enumerate(chosen)}
    paths, labels, texts, keys = [], [], [], []
    for lang, files in per_language.items():
        transcripts = asterisk_transcripts(lang)
        for path in files:
            name = path.relative_to(ASTERISK_ROOT / lang).with_suffix("").as_posix()
            label = label_of.get(path.stem if digits else lang)
            if label is None:
                continue
            paths.append(path)
            labels.append(label)
            texts.append(transcripts.get(name, ""))
            keys.append(f"{lang}/{name}")
    return AudioFiles(paths, labels, class_names, texts, keys)


def asterisk_transcript_file(language: str) -> Path:
    """Where ``asterisk-core-sounds-LANG`` installs the transcripts of its prompts."""
    return ASTERISK_DOCS / f"asterisk-core-sounds-{language}" / f"core-sounds-{language}.txt.gz"


def asterisk_transcripts(language: str) -> dict[str, str]:
    """Prompt name (``digits/1``) -> transcript, from the package's core-sounds-LANG.txt.gz."""
    path = asterisk_transcript_file(language)
    if not path.is_file():
        return {}
    out = {}
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            name, sep, text = line.partition(":")
            if sep and not line.startswith(";") and re.fullmatch(r"[\w/.-]+", name.strip()):
                out[name.strip()] = text.strip()
    return out


def user_audio_files(path: Path) -> AudioFiles:
    """A folder of audio files or a CSV/JSONL manifest (see the module docstring)."""
    if not path.exists():
        raise SelfsupError(
            f"audio:{path} does not exist: pass a folder of audio files or a manifest"
        )
    if path.is_file():
        return _manifest(path)
    files = _audio_under(path)
    if not files:
        raise SelfsupError(
            f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {path}; another format "
            "must be converted first, e.g. `ffmpeg -i IN.mp3 OUT.wav`"
        )
    keys = [p.relative_to(path).as_posix() for p in files]
    nested = all("/" in key for key in keys)
    class_names = sorted({key.split("/")[0] for key in keys}) if nested else []
    labels = [class_names.index(key.split("/")[0]) for key in keys] if nested else None
    texts = [_read_transcript(p.with_suffix(".txt")) for p in files]
    return AudioFiles(files, labels, class_names, texts if any(texts) else None, keys)


def _read_transcript(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else ""


def _manifest(path: Path) -> AudioFiles:
    """Rows with ``path`` (relative to the manifest's folder), optional ``label``, ``text``."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise SelfsupError(
            f"audio:{path} is a {suffix or 'suffix-less'} file: pass a folder of audio files or "
            "a .csv/.jsonl manifest with a path column"
        )
    try:
        with path.open(encoding="utf-8") as f:
            rows = (
                list(csv.DictReader(f))
                if suffix == ".csv"
                else [json.loads(line) for line in f if line.strip()]
            )
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as error:
        raise SelfsupError(f"cannot read the manifest {path}: {error}") from None
    if not rows or any(not isinstance(r, dict) or not r.get("path") for r in rows):
        raise SelfsupError(f"every row of the manifest {path} needs a path (none or empty found)")
    has_label = any(r.get("label") not in (None, "") for r in rows)
    if has_label and any(r.get("label") in (None, "") for r in rows):
        raise SelfsupError(f"some rows of {path} have a label and some do not: label every row")
    class_names = sorted({str(r["label"]) for r in rows}) if has_label else []
    return AudioFiles(
        paths=[path.parent / str(r["path"]) for r in rows],
        labels=[class_names.index(str(r["label"])) for r in rows] if has_label else None,
        class_names=class_names,
        texts=[str(r.get("text") or "") for r in rows],
        keys=[str(r["path"]) for r in rows],
    )
