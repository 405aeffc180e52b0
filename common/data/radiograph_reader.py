"""Chest radiographs as the eye sees them, from PNG/JPEG or DICOM, for MONAI's ``LoadImage``.

A radiograph stored as DICOM holds raw detector values: the rescale (modality LUT) gives the stored unit, the
VOI window (or VOI LUT) the contrast a reader looks at, and ``PhotometricInterpretation`` says whether a high
value is white (MONOCHROME2) or black (MONOCHROME1). A network trained on PNG exports (COVIDx) sees
bright bones on a dark background; fed a MONOCHROME1 file as stored, it sees the negative and its output
changes with no warning. ``RadiographReader`` is MONAI's ``PILReader`` for PNG/JPEG and, for ``.dcm`` files,
applies the modality LUT, the VOI window/LUT and the MONOCHROME1 inversion with pydicom before handing a
float image to the same code path, so both file kinds reach the network alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.data import PILReader
from PIL import Image

from common.data.datacheck import DICOM_SUFFIXES
from common.errors import InvalidInputError

__all__ = ["RadiographReader", "is_dicom_file", "read_dicom_radiograph"]


def is_dicom_file(path: PathLike) -> bool:
    return os.fspath(path).lower().endswith(DICOM_SUFFIXES)


def read_dicom_radiograph(path: PathLike) -> np.ndarray:
    """Grey values of a 2D DICOM radiograph as displayed: modality LUT, VOI window/LUT, MONOCHROME1 inverted.

    Returns float32 (rows, columns); a colour or multi-frame file is a one-sentence ``InvalidInputError``.
    """
    import pydicom
    from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(os.fspath(path))
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InvalidInputError(f"{path}: DICOM radiograph is {photometric}, expected a grey MONOCHROME1/2 image.")
    if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
        raise InvalidInputError(f"{path}: DICOM file holds {ds.NumberOfFrames} frames, expected one radiograph.")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # a compressed transfer syntax without its decoder, or a damaged file
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise InvalidInputError(f"{path}: DICOM pixel data cannot be decoded (transfer syntax {syntax}; "
                                f"{str(exc).splitlines()[0][:100]}).") from exc
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float64)
    if photometric == "MONOCHROME1":
        values = values.max() + values.min() - values
    return values.astype(np.float32)


class RadiographReader(PILReader):
    """``PILReader`` that also reads single-frame DICOM radiographs (see the module docstring).

    Use it as ``LoadImaged``'s ``reader``; its ``converter`` (e.g. to one grey channel) applies to both kinds.
    """

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return all(is_dicom_file(n) for n in names) or super().verify_suffix(filename)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Any:
        names = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        if not any(is_dicom_file(n) for n in names):
            return super().read(data, **kwargs)
        images = []
        for name in names:
            img = Image.fromarray(read_dicom_radiograph(name)) if is_dicom_file(name) else \
                Image.open(name)
            images.append(self.converter(img) if self.converter is not None else img)
        return images if len(images) > 1 else images[0]
