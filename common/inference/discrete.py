"""MONAI's ``AsDiscrete(d)`` with the channel argmax taken by ``torch.max``.

``torch.argmax`` over the channel dimension of a whole volume is slow on the CPU: 1.0 s for 2×256×256×192
logits on 2 threads, against 0.09 s for ``torch.max(...).indices`` (same result), which made the argmax a fifth
of an NFBS volume's inference with the INT8 engine. Everything else (one-hot, threshold, rounding, dtype,
metadata) is MONAI's.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch
from monai.config import NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import AsDiscrete as MonaiAsDiscrete
from monai.transforms import AsDiscreted as MonaiAsDiscreted
from monai.utils import convert_to_tensor

__all__ = ["AsDiscrete", "AsDiscreted", "channel_argmax"]


def channel_argmax(img: torch.Tensor, dim: int = 0, keepdim: bool = True) -> torch.Tensor:
    """Index of the largest channel along ``dim`` (``torch.argmax``'s result, an order of magnitude sooner)."""
    return img.max(dim=dim, keepdim=keepdim).indices


class AsDiscrete(MonaiAsDiscrete):
    """``monai.transforms.AsDiscrete``, its argmax by :func:`channel_argmax`."""

    def __call__(self, img: NdarrayOrTensor, argmax: bool | None = None, to_onehot: int | None = None,
                 threshold: float | None = None, rounding: str | None = None) -> NdarrayOrTensor:
        if self.argmax if argmax is None else argmax:
            img = convert_to_tensor(img, track_meta=get_track_meta())
            img = channel_argmax(img, self.kwargs.get("dim", 0), self.kwargs.get("keepdim", True))
        return super().__call__(img, False, to_onehot, threshold, rounding)


class AsDiscreted(MonaiAsDiscreted):
    """``monai.transforms.AsDiscreted``, its argmax by :func:`channel_argmax`."""

    def __init__(self, keys: Hashable | Sequence[Hashable], argmax: Sequence[bool] | bool = False,
                 to_onehot: Sequence[int | None] | int | None = None,
                 threshold: Sequence[float | None] | float | None = None,
                 rounding: Sequence[str | None] | str | None = None, allow_missing_keys: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(keys, argmax, to_onehot, threshold, rounding, allow_missing_keys, **kwargs)
        self.converter = AsDiscrete()
        self.converter.kwargs = kwargs
