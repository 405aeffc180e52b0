"""Problems the user fixes (a file, a folder, an option) reach them as one sentence, not a traceback.

MONAI's bundle runner wraps an exception raised while it evaluates a config expression in its own
``RuntimeError`` ("Failed to evaluate ..."), so our sentence ends up in the middle of a long traceback. The
exceptions below keep their ordinary types (``FileNotFoundError``, ``ValueError``) for code that catches them,
and carry the ``UserError`` mark; ``install_excepthook`` (run when ``common`` is imported, as every bundle
config does) prints only the sentence of a marked exception found anywhere in an uncaught exception's chain,
and the process exits with status 1. Set ``POCKET_DEBUG=1`` to get the full traceback.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

__all__ = ["InvalidInputError", "MissingInputError", "UserError", "install_excepthook", "user_error_in"]


class UserError(Exception):
    """Marks an exception whose message is a complete sentence telling the user what to fix."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the user named (or a step before this one should have written) is not there."""


class InvalidInputError(UserError, ValueError):
    """An input or option the user gave cannot be used as it is."""


def user_error_in(exc: BaseException | None) -> UserError | None:
    """The first ``UserError`` in ``exc``'s chain of causes and contexts, or ``None``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    err = user_error_in(value)
    if err is None or os.environ.get("POCKET_DEBUG", "") not in ("", "0"):
        _previous_hook(kind, value, tb)
        return
    print(f"error: {err}", file=sys.stderr)
    print("(set POCKET_DEBUG=1 for the traceback)", file=sys.stderr)


_previous_hook = sys.excepthook


def install_excepthook() -> None:
    """Print marked exceptions as one sentence (idempotent; other exceptions go to the hook there was)."""
    global _previous_hook
    if sys.excepthook is not _excepthook:
        _previous_hook = sys.excepthook
        sys.excepthook = _excepthook
