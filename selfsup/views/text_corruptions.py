"""Text perturbations for robustness to distribution shift: character noise, word dropout
and casing, at severities 0 (unchanged) .. 5, deterministic by seed.

They act on the raw strings, before tokenization, as typos and sloppy writing do (Belinkov &
Bisk 2018, arXiv:1711.02173, for character noise; word dropout as in Iyyer et al. 2015).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from selfsup.errors import SelfsupError

RATES = (0.05, 0.1, 0.2, 0.3, 0.4)
"""Share of characters (or words) touched at severities 1..5."""


def character_noise(text: str, rate: float, rng: random.Random) -> str:
    """Each letter, with probability ``rate``, is deleted, replaced by a random letter,
    or swapped with the next character (one of the three at random)."""
    chars, out, i = list(text), [], 0
    while i < len(chars):
        c = chars[i]
        if c.isalpha() and rng.random() < rate:
            edit = rng.randrange(3)
            if edit == 1:
                out.append(rng.choice(string.ascii_lowercase))
            elif edit == 2 and i + 1 < len(chars):
                out += [chars[i + 1], c]
                i += 1
            # edit 0 (or a swap at the end): the letter is dropped
        else:
            out.append(c)
        i += 1
    return "".join(out)


def word_dropout(text: str, rate: float, rng: random.Random) -> str:
    """Each word is dropped with probability ``rate`` (one word always stays)."""
    words = text.split()
    kept = [w for w in words if rng.random() >= rate]
    return " ".join(kept or words[:1])


def casing(text: str, rate: float, rng: random.Random) -> str:
    """Each letter's case is flipped with probability ``rate``."""
    return "".join(c.swapcase() if c.isalpha() and rng.random() < rate else c for c in text)


TEXT_CORRUPTIONS: dict[str, Callable[[str, float, random.Random], str]] = {
    "character_noise": character_noise,
    "word_dropout": word_dropout,
    "casing": casing,
}


def corrupt_texts(texts: list[str], kind: str, severity: int, seed: int = 0) -> list[str]:
    """Perturb every text with ``kind`` at ``severity`` 0 (unchanged) .. 5."""
    if kind not in TEXT_CORRUPTIONS:
        raise SelfsupError(
            f"unknown text corruption {kind!r}; known: {', '.join(TEXT_CORRUPTIONS)}"
        )
    if severity not in range(6):
        raise SelfsupError(f"corruption severity must be 0..5, got {severity}")
    if severity == 0:
        return list(texts)
    rng = random.Random(seed)
    return [TEXT_CORRUPTIONS[kind](t, RATES[severity - 1], rng) for t in texts]
