"""One training per checkpoint folder: a second one started on the same folder stops with a sentence.

Two trainings writing the same ``model.pt`` and resume checkpoints would silently overwrite each other. The
lock is an OS file lock (``flock``) on ``<ckpt_dir>.lock`` beside the folder: the kernel releases it when the
process ends however it ends, so a training killed with SIGKILL never blocks the resume that follows. The
training that takes the lock removes what an interrupted checkpoint write left (its temporary file).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import IO

from common.errors import InvalidInputError

__all__ = ["lock_checkpoint_dir", "release_checkpoint_dir"]

_held: dict[str, IO[str]] = {}  # open lock files of this process, by folder (closing one would release it)


def lock_checkpoint_dir(ckpt_dir: str | os.PathLike) -> Path:
    """Hold the training lock of ``ckpt_dir`` for the life of this process; returns the lock file.

    Only the first process of a ``torchrun`` job takes it (``RANK`` 0): its other ranks train the same model.
    Raises ``InvalidInputError`` (one sentence) when another process holds it.
    """
    import fcntl

    folder = Path(ckpt_dir).resolve()
    lock = folder.parent / f"{folder.name}.lock"
    if int(os.environ.get("RANK", "0")) != 0 or str(folder) in _held:
        return lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    f = open(lock, "a+")  # noqa: SIM115 (held open on purpose)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip() or "another process"
        f.close()
        raise InvalidInputError(f"{folder}: another training ({owner}) is writing these checkpoints; wait for it "
                                "to end or give this one another --bundle_root.") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    _held[str(folder)] = f
    _remove_interrupted_writes(folder)
    return lock


def release_checkpoint_dir(ckpt_dir: str | os.PathLike) -> bool:
    """Let another process train on ``ckpt_dir`` before this one ends (a notebook or test that trained in-process
    and hands the model to a server); returns whether this process held the lock."""
    f = _held.pop(str(Path(ckpt_dir).resolve()), None)
    if f is not None:
        f.close()
    return f is not None


def _remove_interrupted_writes(folder: Path) -> None:
    """Temporary files of checkpoint writes a kill interrupted (``tempfile``'s ``tmpXXXXXXXX``, never renamed):
    with the lock held no other training is writing here, so they are debris."""
    if folder.is_dir():
        for path in folder.iterdir():
            if re.fullmatch(r"tmp[a-z0-9_]{8}", path.name) and path.is_file():
                path.unlink()
