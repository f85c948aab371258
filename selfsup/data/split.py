"""The one rule that sends a sample to the test split of a source that has no split of its own."""

from __future__ import annotations

import hashlib


def in_test_split(key: str, fraction: float) -> bool:
    """Whether the sample named ``key`` (a relative path, a text's first bytes) goes to test:
    the first 8 bytes of blake2b(key) as an integer, mod 10,000, below ``fraction`` * 10,000.

    Stable across runs, machines and Python versions (unlike ``hash``); a sample keeps its
    side when others are added, and duplicates land on the same side.
    """
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 < fraction * 10_000
