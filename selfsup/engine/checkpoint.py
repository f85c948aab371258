"""Checkpoints: written atomically, found by a pointer file, loaded with ``weights_only=True``.

Layout: ``RUN/checkpoints/step-000500.ckpt`` files and ``RUN/checkpoints/latest`` naming
the newest complete one. A checkpoint is first written to ``*.ckpt.tmp``, flushed to disk,
and renamed into place; only then does ``latest`` move (itself written to a temporary file
and renamed). So a crash or SIGKILL at any moment leaves the previous checkpoint and its
pointer intact: at worst a stale ``*.tmp`` file, which never counts as a checkpoint and is
removed by the next successful save. A full disk is a ``SelfsupError`` naming the file, and
also keeps the previous checkpoint.

Loading uses ``weights_only=True``: a file holding pickled Python objects other than
tensors and plain containers is refused, never executed.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
from pathlib import Path
from typing import Any

from selfsup.errors import SelfsupError

KEEP = 2
"""Complete checkpoints kept in the folder; older ones are deleted after each save."""

_NAME = re.compile(r"step-(\d+)\.ckpt")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:06d}.ckpt"


def _step(path: Path) -> int:
    match = _NAME.fullmatch(path.name)
    return int(match.group(1)) if match else -1


def _complete(folder: Path) -> list[Path]:
    """The ``step-*.ckpt`` files of ``folder``, oldest step first (numeric, not lexical order)."""
    found = [p for p in folder.glob("step-*.ckpt") if _NAME.fullmatch(p.name) and p.is_file()]
    return sorted(found, key=_step)


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to the disk, so a rename after it is durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder
    finally:
        os.close(fd)


def _write_error(final: Path, run_dir: Path, error: OSError) -> SelfsupError:
    latest = latest_checkpoint(run_dir)
    kept = f"; the last good checkpoint {latest} is intact" if latest else ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "disk full (no space left on the device): free some space and resume"
    else:
        reason = error.strerror or str(error)
    return SelfsupError(f"could not write checkpoint {final}: {reason}{kept}")


def save(fabric: Any, run_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``state`` for ``step`` and point ``latest`` at it; keep the newest ``KEEP`` files."""
    folder = checkpoint_dir(run_dir)
    final = checkpoint_path(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    pointer_tmp = folder / "latest.tmp"
    if fabric.is_global_zero:
        folder.mkdir(parents=True, exist_ok=True)
    fabric.barrier()
    try:
        fabric.save(tmp, state)
        fabric.barrier()
        if fabric.is_global_zero:
            _fsync(tmp)
            os.replace(tmp, final)
            pointer_tmp.write_text(final.name + "\n")
            _fsync(pointer_tmp)
            os.replace(pointer_tmp, folder / "latest")
            _fsync(folder)
    except OSError as error:
        if fabric.is_global_zero:
            for leftover in (tmp, pointer_tmp):
                leftover.unlink(missing_ok=True)
        raise _write_error(final, run_dir, error) from None
    if fabric.is_global_zero:
        for old in _complete(folder)[:-KEEP]:
            old.unlink(missing_ok=True)
        for stale in folder.glob("*.tmp"):  # left by a process killed while writing
            stale.unlink(missing_ok=True)
    fabric.barrier()
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None.

    The ``latest`` pointer decides; without it (or if it names no ``step-*.ckpt`` file in the
    folder) the highest step wins. ``*.tmp`` files are never checkpoints.
    """
    folder = checkpoint_dir(run_dir)
    pointer = folder / "latest"
    if pointer.is_file():
        try:
            name = pointer.read_text().strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        if _NAME.fullmatch(name) and (folder / name).is_file():
            return folder / name
    found = _complete(folder)
    return found[-1] if found else None


def load(fabric: Any, path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Restore ``state`` in place from ``path``; a damaged or unsafe file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise SelfsupError(f"checkpoint {path} does not exist")
    try:
        return fabric.load(path, state, weights_only=True)
    except SelfsupError:
        raise
    except pickle.UnpicklingError as error:
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            raise SelfsupError(
                f"checkpoint {path} holds pickled Python objects, not only tensors: refused, "
                "because selfsup loads checkpoints with weights_only=True and never runs code "
                "from a file; it is not a selfsup checkpoint"
            ) from None
        raise SelfsupError(_unreadable(path, error)) from None
    except Exception as error:  # torch raises many kinds for a truncated or foreign file
        raise SelfsupError(_unreadable(path, error)) from None


def _unreadable(path: Path, error: BaseException) -> str:
    first = (str(error).splitlines() or [""])[0][:120]
    step = _step(path)
    earlier = [p for p in _complete(path.parent) if p != path and (step < 0 or _step(p) < step)]
    advice = (
        f"resume from the one before it: --resume {earlier[-1]}"
        if earlier
        else "resume from an earlier step-*.ckpt"
    )
    return (
        f"checkpoint {path} is unreadable ({type(error).__name__}: {first}); it may be truncated "
        f"or not a selfsup checkpoint: {advice}"
    )
