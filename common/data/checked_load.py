"""Load an image and check it in the same read, so that inference over many files can skip a bad one.

Before training, :mod:`common.data.datacheck` reads every file of the data list. At inference a second read
of every volume would double the slowest part of a run on a laptop, so ``CheckedLoadImaged`` applies the same
checks to the array MONAI's ``LoadImaged`` has just read: the file exists and can be read, the image has the
spatial dimensions and channel count the bundle needs, no NaN/Inf voxel, not constant. A failure is an
``InvalidInputError`` (or ``MissingInputError``) whose message is one sentence naming the file, which
:mod:`common.inference.skipping` turns into a skipped case.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import EnsureChannelFirst, LoadImage, LoadImaged

from common.data.datacheck import check_spatial_dims, check_voxel_values, short_reason
from common.errors import InvalidInputError, MissingInputError

__all__ = ["CheckedLoadImaged", "check_loaded_image"]


def _fmt_channels(allowed: Sequence[int]) -> str:
    allowed = [int(a) for a in allowed]
    return str(allowed[0]) if len(allowed) == 1 else ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}"


def check_loaded_image(path: str, image: Any, spatial_dims: int | None = None,
                       channels: int | Sequence[int] | None = None) -> None:
    """Check an image as ``LoadImage`` returned it (channel position from its metadata); raise a sentence."""
    first = EnsureChannelFirst()(image)  # a view: only to read the channel count and spatial shape
    if spatial_dims is not None:
        check_spatial_dims(path, tuple(first.shape[1:]), spatial_dims, tuple(image.shape))
    if channels is not None:
        allowed = (channels,) if isinstance(channels, int) else tuple(channels)
        if first.shape[0] not in allowed:
            n = first.shape[0]
            raise InvalidInputError(f"{path}: image has {n} channel{'s' if n != 1 else ''}, expected "
                                    f"{_fmt_channels(allowed)}.")
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    check_voxel_values(path, array)


class CheckedLoadImaged(LoadImaged):
    """``monai.transforms.LoadImaged`` that checks what it read (see the module docstring).

    Args:
        keys: as ``LoadImaged``.
        spatial_dims: 2 or 3 to refuse an image of the other kind (a volume of one slice counts as 2D).
        channels: the allowed channel count(s) after the files of a case are stacked.
        kwargs: ``LoadImaged``'s other arguments.
    """

    def __init__(self, keys: Any, spatial_dims: int | None = None, channels: int | Sequence[int] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(keys, **kwargs)
        self.spatial_dims = spatial_dims
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        names = {key: data[key] for key in self.key_iterator(dict(data))}
        for value in names.values():
            for path in _paths(value):
                if not os.path.exists(path):
                    raise MissingInputError(f"{path}: file does not exist.")
        try:
            out = super().__call__(data, reader)
        except Exception as exc:  # any reader failure is a problem of the file, to be named
            culprit = _culprit(names, self._loader)
            raise InvalidInputError(f"{culprit}: cannot be read as an image ({short_reason(exc)}).") from exc
        for key, value in names.items():
            check_loaded_image(_paths(value)[0], out[key], self.spatial_dims, self.channels)
        return out


def _paths(value: Any) -> list[str]:
    return [os.fspath(value)] if isinstance(value, (str, os.PathLike)) else [os.fspath(v) for v in value]


def _culprit(names: Mapping[Hashable, Any], loader: LoadImage) -> str:
    """The file that failed: the only one, or (only on this failure path) the first that fails alone."""
    paths = [p for value in names.values() for p in _paths(value)]
    if len(paths) > 1:
        for path in paths:
            try:
                loader(path)
            except Exception:
                return path
    return paths[0]
