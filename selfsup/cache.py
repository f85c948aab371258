"""Where selfsup keeps what it derives once and reuses: rasterised images, permutation sets.

``$SELFSUP_CACHE`` if set, else ``$XDG_CACHE_HOME/selfsup``, else ``~/.cache/selfsup``.
Everything in it can be deleted; it is made again when needed.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache folder (or a subfolder of it), created if missing."""
    root = os.environ.get("SELFSUP_CACHE")
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "selfsup"
    folder = base.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
