"""Prediction files that a kill cannot leave truncated under their real name.

MONAI's ``NibabelWriter`` saves straight to the output name; a run killed (or a disk filled) during the write
leaves a truncated ``*_seg.nii.gz`` that looks like a result. ``AtomicNibabelWriter`` writes to a hidden
temporary name in the same folder and renames it, which the file system does in one step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from monai.config import PathLike
from monai.data import NibabelWriter

__all__ = ["AtomicNibabelWriter"]


class AtomicNibabelWriter(NibabelWriter):
    """``monai.data.NibabelWriter`` whose file appears only once complete (for ``SaveImage(d)``'s ``writer``)."""

    def write(self, filename: PathLike, verbose: bool = False, **obj_kwargs: Any) -> None:
        final = Path(filename)
        partial = final.with_name(f".partial-{final.name}")  # same suffix: nibabel picks the format from it
        try:
            super().write(partial, verbose=verbose, **obj_kwargs)
            os.replace(partial, final)
        finally:
            if partial.exists():
                partial.unlink()
