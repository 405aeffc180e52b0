"""Score a prediction on the grid its label file lives on, not on the resampled grid the network works on.

A bundle that resamples (LiTS to its fingerprint spacing, NFBS to its training spacing, a CPU recipe at twice
the data spacing) would otherwise report Dice and distances of a resampled label: a label that nearest-neighbour
resampling has thinned or thickened, and an empty-mask penalty (the image diagonal) of another grid. The
evaluation configs invert the prediction onto the input image's grid (MONAI ``Invertd``, as ``inference.json``
does before it writes a mask) and then read the label again from its file with :class:`ReloadLabeld`, so the
metrics are those of the mask a user gets against the label they have, in mm of that grid.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform

from common.errors import InvalidInputError

__all__ = ["ReloadLabeld"]


class ReloadLabeld(MapTransform):
    """Replace each key's (preprocessed) label by the label read again from the file it came from.

    Args:
        keys: label keys; each must hold a MetaTensor whose ``filename_or_obj`` names its file.
        like: key of a prediction already inverted onto the input grid; the label must have its spatial shape
            (the data check has made sure image and label share one grid, so a mismatch is a config error).
        label_transform: applied to ``{key: label}`` after reading (e.g. the bundle's label-value mapping).
    """

    def __init__(self, keys: KeysCollection, like: str = "pred", label_transform: Callable | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.like = like
        self.label_transform = label_transform
        self.loader = LoadImage(image_only=True, ensure_channel_first=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            source = label.meta.get("filename_or_obj") if isinstance(label, MetaTensor) else None
            if not source:
                raise InvalidInputError(f"the {key!r} item has no file name to read its label grid from.")
            fresh = self.loader(source)
            if self.label_transform is not None:
                fresh = self.label_transform({key: fresh})[key]
            like = d.get(self.like)
            if like is not None and tuple(like.shape[1:]) != tuple(fresh.shape[1:]):
                raise InvalidInputError(
                    f"{source}: the prediction inverted onto the input grid has shape {tuple(like.shape[1:])}, "
                    f"the label file {tuple(fresh.shape[1:])}; image and label must share one grid.")
            d[key] = torch.round(fresh) if fresh.is_floating_point() else fresh
        return d
