"""Predict every good image of a folder: a bad file is skipped with a sentence, and the run still fails at the end.

One unreadable volume among hundreds must not cost the user the other predictions, nor pass unnoticed.
``SkipBadImages`` is MONAI's ``Dataset`` whose items, when preprocessing raises a ``UserError`` (the sentences of
:mod:`common.data.checked_load`), become a marker instead of an exception in a DataLoader worker;
``collate_skipping`` keeps the markers apart from the real batch; ``SkippingLoader`` (the evaluator's data loader)
logs each sentence and yields only real batches, and its ``finish()``, the bundle's last ``run`` step, raises
one summary sentence if anything was skipped, so ``monai.bundle run`` exits with status 1 after writing the rest.
Any other exception (a bug, not a bad file) still stops the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from monai.data import Dataset, list_data_collate

from common.errors import InvalidInputError, user_error_in

__all__ = ["SKIPPED", "SkipBadImages", "SkippingLoader", "collate_skipping"]

logger = logging.getLogger(__name__)

SKIPPED = "skipped"  # key of a marker item: {"skipped": sentence, "file": the case's (first) image}


class SkipBadImages(Dataset):
    """``monai.data.Dataset`` that returns a marker for a case whose preprocessing raised a ``UserError``."""

    def __init__(self, data: Sequence, transform: Any = None, image_key: str = "image") -> None:
        super().__init__(data, transform)
        self.image_key = image_key

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as exc:
            err = user_error_in(exc)
            if err is None:
                raise
            return {SKIPPED: str(err), "file": _first_file(self.data[index], self.image_key)}


def _first_file(item: Any, key: str) -> str:
    value = item.get(key, "") if isinstance(item, dict) else item
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else str(value)


def collate_skipping(items: list) -> dict:
    """``list_data_collate`` of the good items (or ``None``), with the markers beside it."""
    markers = [i for i in items if isinstance(i, dict) and SKIPPED in i]
    good = [i for i in items if not (isinstance(i, dict) and SKIPPED in i)]
    return {"batch": list_data_collate(good) if good else None, "size": len(good), SKIPPED: markers}


class SkippingLoader:
    """Iterate a DataLoader built with ``SkipBadImages`` and ``collate_skipping``, leaving out skipped cases.

    Its length is unknown until the end (ignite then runs one epoch until the data runs out).
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.skipped: list[dict] = []
        self.predicted = 0

    def __iter__(self) -> Iterator[Any]:
        self.skipped, self.predicted = [], 0
        for batch in self.loader:
            for marker in batch[SKIPPED]:
                logger.error("skipped: %s", marker[SKIPPED])
                self.skipped.append(marker)
            if batch["batch"] is not None:
                self.predicted += batch["size"]
                yield batch["batch"]

    def finish(self) -> None:
        """Raise one summary sentence if any case was skipped (call after the evaluator has run)."""
        if not self.skipped:
            return
        n, total = len(self.skipped), len(self.skipped) + self.predicted
        files = ", ".join(m["file"] for m in self.skipped)
        raise InvalidInputError(
            f"{n} of {total} image{'s' if total != 1 else ''} could not be used and ha{'ve' if n != 1 else 's'} "
            f"no prediction ({files}; each reason is logged above); the other {total - n} were predicted."
        )
