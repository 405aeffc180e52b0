"""MONAI's Dice, Hausdorff and surface-distance metrics with the collection's rule for empty masks (see the
package docstring), and distances in mm.

MONAI leaves these cases to the caller: Dice is NaN for an empty reference (``ignore_empty``), a distance is
0 when both masks are empty and NaN/inf when one is; a summary that skips NaN then reads as if a missed
structure had been found perfectly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.metrics import DiceMetric as MonaiDiceMetric
from monai.metrics import HausdorffDistanceMetric as MonaiHausdorffDistanceMetric
from monai.metrics import SurfaceDistanceMetric as MonaiSurfaceDistanceMetric

__all__ = ["DiceMetric", "HausdorffDistanceMetric", "SurfaceDistanceMetric", "empty_masks", "image_diagonal",
           "spacing_of"]


def empty_masks(y_pred: torch.Tensor, y: torch.Tensor, include_background: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Which (batch, class) masks are empty in the prediction and in the reference (one-hot ``[B, C, ...]``)."""
    if not include_background:
        y_pred, y = y_pred[:, 1:], y[:, 1:]
    return y_pred.flatten(2).sum(-1) == 0, y.flatten(2).sum(-1) == 0


def spacing_of(image: torch.Tensor) -> list[list[float]] | None:
    """Voxel spacing of each image of a batch from its affine (``None`` for a plain tensor: distances in voxels)."""
    if not isinstance(image, MetaTensor):
        return None
    affine = image.affine
    spatial = image.ndim - 2
    affines = affine if affine.ndim == 3 else affine[None].expand(image.shape[0], -1, -1)
    return [[float(s) for s in affine_to_spacing(a, r=spatial)] for a in affines]


def image_diagonal(shape: Sequence[int], spacing: Sequence[float] | None) -> float:
    """Length of the image's diagonal, in mm (in voxels without a spacing)."""
    spacing = [1.0] * len(shape) if spacing is None else spacing
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing)))


class DiceMetric(MonaiDiceMetric):
    """MONAI's ``DiceMetric`` with ``ignore_empty=False``: both empty -> 1, an empty reference predicted -> 0."""

    def __init__(self, include_background: bool = True, reduction: str = "mean", get_not_nans: bool = False,
                 num_classes: int | None = None, **kwargs: Any) -> None:
        super().__init__(include_background, reduction, get_not_nans, ignore_empty=False, num_classes=num_classes,
                         **kwargs)


class _EmptyMaskRule:
    """Replaces MONAI's value where a mask is empty: 0 when both are, the image's diagonal when one is."""

    include_background: bool

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        spacing = kwargs.pop("spacing", None) or spacing_of(y_pred) or spacing_of(y)
        pred_empty, ref_empty = empty_masks(y_pred, y, self.include_background)
        if bool((pred_empty | ref_empty).all()):  # nothing for MONAI to measure (and no warning about it)
            result = torch.zeros(pred_empty.shape, dtype=torch.float, device=y_pred.device)
        else:
            with warnings.catch_warnings():
                # MONAI 1.6's own distance code passes get_mask_edges' deprecated always_return_as_numpy (not
                # a call of ours to change); without the filter every evaluation prints its FutureWarning
                warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
                result = super()._compute_tensor(y_pred, y, spacing=spacing, **kwargs).float()  # type: ignore[misc]
        for b in range(result.shape[0]):
            diagonal = image_diagonal(y_pred.shape[2:], None if spacing is None else spacing[b])
            result[b][pred_empty[b] & ref_empty[b]] = 0.0
            result[b][pred_empty[b] ^ ref_empty[b]] = diagonal
        return result


class HausdorffDistanceMetric(_EmptyMaskRule, MonaiHausdorffDistanceMetric):
    """MONAI's ``HausdorffDistanceMetric`` (e.g. ``percentile=95``) in mm, with the empty-mask rule."""


class SurfaceDistanceMetric(_EmptyMaskRule, MonaiSurfaceDistanceMetric):
    """MONAI's ``SurfaceDistanceMetric`` (average surface distance) in mm, with the empty-mask rule."""
