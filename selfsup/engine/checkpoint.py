"""Checkpoints: written atomically, found by a pointer file, loaded with ``weights_only=True``.

Layout: ``RUN/checkpoints/step-000500.ckpt`` files and ``RUN/checkpoints/latest`` naming
the newest complete one. A checkpoint is first written to ``*.tmp`` and renamed into
place, so a crash during the write never damages the previous checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError

KEEP = 2


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:06d}.ckpt"


def save(fabric: Any, run_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``state`` for ``step`` and point ``latest`` at it; keep the newest ``KEEP`` files."""
    folder = checkpoint_dir(run_dir)
    final = checkpoint_path(run_dir, step)
    tmp = final.with_suffix(".ckpt.tmp")
    if fabric.is_global_zero:
        folder.mkdir(parents=True, exist_ok=True)
    fabric.barrier()
    try:
        fabric.save(tmp, state)
    except OSError as error:
        if fabric.is_global_zero and tmp.exists():
            tmp.unlink()
        latest = latest_checkpoint(run_dir)
        kept = f"; the last good checkpoint {latest} is intact" if latest else ""
        raise SelfsupError(
            f"could not write checkpoint {final}: {error.strerror or error}{kept}"
        ) from None
    fabric.barrier()
    if fabric.is_global_zero:
        os.replace(tmp, final)
        pointer_tmp = folder / "latest.tmp"
        pointer_tmp.write_text(final.name + "\n")
        os.replace(pointer_tmp, folder / "latest")
        for old in sorted(folder.glob("step-*.ckpt"))[:-KEEP]:
            old.unlink()
    fabric.barrier()
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None."""
    folder = checkpoint_dir(run_dir)
    pointer = folder / "latest"
    if pointer.is_file():
        candidate = folder / pointer.read_text().strip()
        if candidate.is_file():
            return candidate
    found = sorted(folder.glob("step-*.ckpt"))
    return found[-1] if found else None


def load(fabric: Any, path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Restore ``state`` in place from ``path``; a damaged file is an error naming it."""
    if not Path(path).is_file():
        raise SelfsupError(f"checkpoint {path} does not exist")
    try:
        return fabric.load(path, state, weights_only=True)
    except SelfsupError:
        raise
    except Exception as error:  # torch raises many kinds for a truncated or foreign file
        raise SelfsupError(
            f"checkpoint {path} is unreadable ({type(error).__name__}: {str(error).splitlines()[0][:120]}); "
            "it may be truncated or not a selfsup checkpoint: resume from an earlier step-*.ckpt"
        ) from None
