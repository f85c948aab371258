"""Synthetic speech: any text spoken by ``espeak-ng``, for pretraining volume beyond recordings.

The Asterisk prompts are about two hours of real speech; ``espeak-ng`` (Debian ``espeak-ng``,
100+ languages, a dozen voice variants each) speaks any text, so pretraining can see many more
utterances and voices. Its speech is robotic: pretrain on it, evaluate on real recordings
(the ``espeak-wav2vec2`` preset sets ``eval.data: asterisk``).

Specs (``:key=value`` options may follow either form):
    espeak[:LANGS]          the transcripts of the Asterisk prompts of LANGS (default: every
                            language whose transcripts are installed), each spoken by voices
                            of its own language and labelled by it, as ``asterisk:LANGS``.
                            A transcript goes to the split its recording is in, so the text of
                            the held-out prompts is never spoken in pretraining. As for the
                            recordings, CTC leaves out (and counts) a transcript it cannot
                            spell ("press 1") rather than stopping.
    espeak:TEXTSPEC         any text source (``fortunes``, ``gcide``, ``text:FILE`` ...), its
                            own split, spoken by voices of the ``voices=`` languages
                            (default en) and labelled by the voice's language.
Options:
    voices=en,fr            espeak-ng languages to draw each text's voice from; ``voices=label``
                            speaks each text in the language its label names (a ``text:FOLDER``
                            with ``en/`` and ``de/`` subfolders, a JSONL with ``label: de``)
    copies=N                speak each text N times, each time by another voice (default 1)
    max=N                   speak only the first N texts of the split
    seed=S                  the seed of the voices drawn (default 0)

Each text is cut into pieces of at most ``MAX_CHARS`` characters at sentence, else word,
boundaries (about ``MAX_CHARS / 12`` seconds at the slowest speed), one utterance a piece,
its transcript the piece. Each utterance draws, from a generator seeded by (seed, language,
copy, text), a voice variant, a speed and a pitch: the same text gets the same voice on every
machine. It is rendered once, by at most two ``espeak-ng`` processes at a time, into the
selfsup cache (``selfsup.cache``) under a name hashed from the text and the voice, and read
back as a recording (22,050 Hz, resampled to the run's rate by ``selfsup.data.audio``).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from selfsup.cache import cache_dir
from selfsup.data.audio import (
    ASTERISK_INSTALL,
    ASTERISK_LANGUAGES,
    TEST_FRACTION,
    AudioFiles,
    asterisk_transcript_file,
    asterisk_transcripts,
)
from selfsup.data.split import in_test_split
from selfsup.errors import SelfsupError

Split = Literal["train", "test"]

INSTALL_HINT = "`sudo apt-get install espeak-ng`"
ESPEAK_USAGE = (
    "espeak[:en,fr,...] or espeak:TEXTSPEC, then :voices=LANGS, :copies=N, :max=N, :seed=S"
)
MAX_CHARS = 120
"""Longest piece of text spoken as one utterance: 10 s at the slowest speed (~12 characters a
second at 130 words a minute), long enough for a sentence, short enough for a batch crop."""
SPEEDS = (130, 210)
"""Words per minute drawn per utterance (espeak-ng's default is 175)."""
PITCHES = (25, 75)
"""Pitch drawn per utterance, on espeak-ng's 0-99 scale (default 50)."""
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
"""Voice variants (espeak-ng's ``!v`` files) drawn per utterance; "" is the language's own."""
ESPEAK_LANGUAGE = {"en": "en-us"}
"""The espeak-ng language that speaks an Asterisk language (its prompts are American)."""
MAX_PROCESSES = 2
RENDER_TIMEOUT_S = 60
OPTIONS = ("voices", "copies", "max", "seed")


@dataclass(frozen=True)
class Utterance:
    """One piece of text and the voice that speaks it."""

    text: str
    language: str
    """The label's language name (the voice's, or the Asterisk language)."""
    voice: str
    """espeak-ng's ``-v`` argument: language, then ``+variant``."""
    speed: int
    pitch: int
    key: str
    """Where it came from, for the split hash and error messages."""

    def cache_name(self) -> str:
        """A file name that changes with anything that changes the sound."""
        what = f"{self.voice}|{self.speed}|{self.pitch}|{self.text}"
        return hashlib.blake2b(what.encode(), digest_size=16).hexdigest() + ".wav"


def parse_spec(argument: str) -> tuple[str, dict[str, str]]:
    """``espeak``'s argument -> (the text part, {option: value}); trailing ``:key=value``
    segments are options, the rest (colons and all) is the text part."""
    parts = argument.split(":") if argument else []
    options: dict[str, str] = {}
    while parts and "=" in parts[-1]:
        key, _, value = parts.pop().partition("=")
        key = key.strip().lower()
        if key not in OPTIONS:
            raise SelfsupError(
                f"unknown espeak option {key!r}; known: {', '.join(OPTIONS)} ({ESPEAK_USAGE})"
            )
        options[key] = value.strip()
    return ":".join(parts).strip(), options


def _int_option(options: dict[str, str], key: str, default: int, least: int) -> int:
    value = options.get(key)
    if value is None:
        return default
    if not value.isdigit() or int(value) < least:
        raise SelfsupError(f"espeak option {key}={value!r} must be an integer >= {least}")
    return int(value)


def pieces(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """``text`` with its whitespace collapsed, cut into pieces of at most ``max_chars``:
    whole sentences packed greedily, a longer sentence cut between words (a longer word
    alone is cut where it must be)."""
    words_of = [s.split() for s in re.split(r"(?<=[.!?;])\s+", " ".join(text.split()))]
    out: list[str] = []
    current = ""
    for words in words_of:
        sentence = " ".join(words)
        if current and len(current) + 1 + len(sentence) <= max_chars:
            current += " " + sentence
            continue
        if current:
            out.append(current)
        current = ""
        for word in words:
            while len(word) > max_chars:
                if current:
                    out.append(current)
                out.append(word[:max_chars])
                word, current = word[max_chars:], ""
            if current and len(current) + 1 + len(word) > max_chars:
                out.append(current)
                current = ""
            current = f"{current} {word}" if current else word
    if current:
        out.append(current)
    return [p for p in out if p]


def draw_voice(language: str, text: str, copy: int, seed: int) -> tuple[str, int, int]:
    """(voice, speed, pitch) for one utterance, from a generator seeded by all four."""
    rng = random.Random(f"{seed}|{language}|{copy}|{text}")  # str seeds hash with SHA-512
    variant = rng.choice(VARIANTS)
    voice = ESPEAK_LANGUAGE.get(language, language) + (f"+{variant}" if variant else "")
    return voice, rng.randint(*SPEEDS), rng.randint(*PITCHES)


def utterances(texts: list[tuple[str, str, str]], *, copies: int, seed: int) -> list[Utterance]:
    """(text, language, key) triples -> utterances: each text's pieces, ``copies`` times."""
    out = []
    for text, language, key in texts:
        for i, piece in enumerate(pieces(text)):
            for copy in range(copies):
                voice, speed, pitch = draw_voice(language, piece, copy, seed)
                where = f"{key}#{i}" + (f"@{copy}" if copies > 1 else "")
                out.append(Utterance(piece, language, voice, speed, pitch, where))
    return out


def espeak_binary() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise SelfsupError(f"the espeak source speaks text with espeak-ng: {INSTALL_HINT}")
    return found


def espeak_languages(binary: str) -> set[str]:
    """The language names espeak-ng has voices for: ``espeak-ng --voices``' second column and
    the other languages each voice speaks (``(fr 5)``: ``fr`` is French of France)."""
    listing = subprocess.run(
        [binary, "--voices"], capture_output=True, text=True, timeout=RENDER_TIMEOUT_S
    )
    names = set(re.findall(r"\((\S+) \d+\)", listing.stdout))
    return names | {line.split()[1] for line in listing.stdout.splitlines()[1:] if line.split()}


def render(utterance: Utterance, wav: Path, binary: str) -> None:
    """Speak ``utterance`` into ``wav`` (22,050 Hz mono 16-bit), which appears atomically."""
    wav.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=wav.parent, suffix=".wav.tmp")
    os.close(fd)
    command = [binary, "-v", utterance.voice, "-s", str(utterance.speed)]
    command += ["-p", str(utterance.pitch), "-b", "1", "-w", tmp, "--stdin"]
    try:
        done = subprocess.run(
            command, input=utterance.text.encode(), capture_output=True, timeout=RENDER_TIMEOUT_S
        )
        if done.returncode != 0 or os.path.getsize(tmp) <= 44:  # a bare wav header
            why = done.stderr.decode(errors="replace").strip().splitlines() or ["no audio"]
            raise SelfsupError(
                f"espeak-ng could not speak {utterance.key} with voice {utterance.voice}: {why[0]}"
            )
        os.replace(tmp, wav)
    except subprocess.TimeoutExpired:
        raise SelfsupError(
            f"espeak-ng took over {RENDER_TIMEOUT_S} s to speak {utterance.key}"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def render_all(todo: list[Utterance], folder: Path, *, progress: bool = True) -> None:
    """Render the utterances missing from ``folder``, two ``espeak-ng`` processes at a time."""
    binary = espeak_binary()
    known = espeak_languages(binary)
    wanted = {ESPEAK_LANGUAGE.get(u.language, u.language) for u in todo}
    if missing := sorted(wanted - known):
        raise SelfsupError(
            f"espeak-ng has no voice for {', '.join(missing)}; `espeak-ng --voices` lists them"
        )

    def job(utterance: Utterance) -> None:
        render(utterance, folder / utterance.cache_name(), binary)

    from rich.progress import Progress

    from selfsup.engine.progress import console

    workers = min(MAX_PROCESSES, os.cpu_count() or 1)
    with (
        Progress(console=console, disable=not progress, transient=True) as bar,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        task = bar.add_task(f"speaking {len(todo)} utterances with espeak-ng", total=len(todo))
        for _ in pool.map(job, todo):
            bar.advance(task)


def cached_speech(found: list[Utterance], folder: Path, *, progress: bool = True) -> list[Path]:
    """The cache file of every utterance, rendering (once) those not there yet."""
    paths = [folder / u.cache_name() for u in found]
    todo = list({u.cache_name(): u for u, p in zip(found, paths) if not p.is_file()}.values())
    if todo:
        render_all(todo, folder, progress=progress)
    return paths


def speaks_asterisk_transcripts(argument: str) -> bool:
    """Whether ``espeak:ARGUMENT`` speaks the Asterisk transcripts (no text source named)."""
    text_spec = parse_spec(argument)[0]
    return all(lang.strip() in ASTERISK_LANGUAGES for lang in text_spec.split(",") if lang.strip())


def espeak_files(argument: str, split: Split, *, progress: bool = True) -> AudioFiles:
    """One split of ``espeak:ARGUMENT`` (see the module docstring), rendered where missing."""
    text_spec, options = parse_spec(argument)
    copies = _int_option(options, "copies", 1, 1)
    seed = _int_option(options, "seed", 0, 0)
    limit = _int_option(options, "max", 0, 1) if "max" in options else None
    if speaks_asterisk_transcripts(argument):
        languages = [lang.strip() for lang in text_spec.split(",") if lang.strip()]
        if "voices" in options:
            raise SelfsupError(
                "espeak[:LANGS] speaks each Asterisk transcript in its own language: name the "
                "languages as espeak:en,fr, or give a text source, espeak:TEXTSPEC:voices=LANGS"
            )
        texts, class_names = _asterisk_texts(languages, split)
    elif re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]+)*(,[a-z]{2,3}(-[a-z0-9]+)*)*", text_spec):
        raise SelfsupError(
            f"espeak:{text_spec}: the built-in text is the Asterisk transcripts "
            f"({', '.join(ASTERISK_LANGUAGES)}); for other languages give text in them, "
            f"e.g. espeak:text:FILE:voices={text_spec}"
        )
    else:
        voices = [v.strip() for v in options.get("voices", "en").split(",") if v.strip()]
        texts, class_names = _source_texts(text_spec, voices, split, seed)
    texts = texts[:limit] if limit is not None else texts
    found = utterances(texts, copies=copies, seed=seed)
    if not found:
        raise SelfsupError(f"espeak:{argument} has no text to speak in its {split} split")
    folder = cache_dir("espeak")
    paths = cached_speech(found, folder, progress=progress)
    label_of = {name: i for i, name in enumerate(class_names)}
    return AudioFiles(
        paths=paths,
        labels=[label_of[u.language] for u in found],
        class_names=class_names,
        texts=[u.text for u in found],
        keys=[u.key for u in found],
    )


_NOTE = re.compile(r"\([^)]*\)|\[[^\]]*\]")
"""A bracketed note in an Asterisk transcript (an English gloss, a stage direction): the
recording does not say it."""


def _asterisk_texts(
    languages: list[str], split: Split
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The transcripts of the Asterisk prompts in ``split`` (by the recordings' own hash), as
    (text, language, key); the class names are the languages, in ``asterisk:LANGS`` order."""
    chosen = languages or [
        lang for lang in ASTERISK_LANGUAGES if asterisk_transcript_file(lang).is_file()
    ]
    if not chosen:
        raise SelfsupError(
            f"no Asterisk transcripts installed for espeak to speak: {ASTERISK_INSTALL}, or "
            "give a text source: espeak:TEXTSPEC"
        )
    texts = []
    for lang in chosen:
        if not asterisk_transcript_file(lang).is_file():
            raise SelfsupError(
                f"the Asterisk transcripts for {lang!r} are not installed: "
                f"`sudo apt-get install asterisk-core-sounds-{lang}`"
            )
        for name, text in sorted(asterisk_transcripts(lang).items()):
            key = f"{lang}/{name}"
            if in_test_split(key, TEST_FRACTION) == (split == "test"):
                texts.append((_NOTE.sub(" ", text), lang, key))
    return texts, chosen


def _source_texts(
    spec: str, voices: list[str], split: Split, seed: int
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The texts of the text source ``spec``, each given one of ``voices`` by seed, or with
    ``voices=label`` the language its label names."""
    from selfsup.data.text import load_texts

    if not voices:
        raise SelfsupError(f"espeak:{spec}:voices= names no language ({ESPEAK_USAGE})")
    corpus = load_texts(spec, split)
    if voices == ["label"]:
        if corpus.labels is None:
            raise SelfsupError(
                f"espeak:{spec}:voices=label needs labelled text (language subfolders of "
                "text:FOLDER, or a label field in JSONL): this source has no labels"
            )
        names = corpus.class_names
        spoken = [names[label] for label in corpus.labels]
    else:
        names = voices
        spoken = [random.Random(f"{seed}|{text}").choice(voices) for text in corpus.texts]
    keys = [f"{spec}/{i}" for i in range(len(corpus.texts))]
    return list(zip(corpus.texts, spoken, keys, strict=True)), names
