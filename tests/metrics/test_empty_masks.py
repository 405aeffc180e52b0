"""The collection's metric rule for empty masks, one case each, and distances in mm from the image metadata."""

from __future__ import annotations

import math

import pytest
import torch
from monai.data import MetaTensor
from monai.metrics import HausdorffDistanceMetric as MonaiHD

from common.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDistanceMetric, image_diagonal

SPACING = (2.0, 1.0, 3.0)
SHAPE = (10, 12, 8)


def one_hot(mask: torch.Tensor) -> MetaTensor:
    """[1, 2, *SHAPE] background/foreground with SPACING in its affine."""
    affine = torch.diag(torch.tensor([*SPACING, 1.0]))
    return MetaTensor(torch.stack([1 - mask, mask]).float()[None], affine=affine)


def cube(lo: int, hi: int) -> torch.Tensor:
    mask = torch.zeros(SHAPE)
    mask[lo:hi, lo:hi, lo:hi] = 1
    return mask


EMPTY = torch.zeros(SHAPE)
DIAGONAL = math.sqrt(sum((n * s) ** 2 for n, s in zip(SHAPE, SPACING)))


@pytest.mark.parametrize(
    "pred,ref,dice,distance",
    [(EMPTY, EMPTY, 1.0, 0.0),  # nothing to find, nothing found: perfect
     (EMPTY, cube(2, 6), 0.0, DIAGONAL),  # missed structure: worst distance, not NaN
     (cube(2, 6), EMPTY, 0.0, DIAGONAL)],  # spurious structure
)
def test_empty_cases(pred: torch.Tensor, ref: torch.Tensor, dice: float, distance: float) -> None:
    y_pred, y = one_hot(pred), one_hot(ref)
    assert float(DiceMetric(include_background=False)(y_pred, y)) == dice
    assert float(HausdorffDistanceMetric(percentile=95)(y_pred, y)) == pytest.approx(distance)
    assert float(SurfaceDistanceMetric(symmetric=True)(y_pred, y)) == pytest.approx(distance)
    assert image_diagonal(SHAPE, SPACING) == pytest.approx(DIAGONAL)


def test_both_present_is_monai_in_mm() -> None:
    y_pred, y = one_hot(cube(2, 6)), one_hot(cube(3, 7))
    ours = float(HausdorffDistanceMetric(percentile=95)(y_pred, y))
    monai_mm = float(MonaiHD(percentile=95)(y_pred, y, spacing=list(SPACING)))
    monai_voxels = float(MonaiHD(percentile=95)(y_pred, y))
    assert ours == pytest.approx(monai_mm) and ours != pytest.approx(monai_voxels)
    assert 0 < float(DiceMetric(include_background=False)(y_pred, y)) < 1


def test_a_mean_over_cases_counts_the_empty_ones() -> None:
    """Three cases, one missed: the mean is taken over all three (MONAI's would drop the NaN and read 0 or 1)."""
    metric = HausdorffDistanceMetric(percentile=95)
    dice = DiceMetric(include_background=False)
    for pred, ref in ((cube(2, 6), cube(2, 6)), (EMPTY, cube(2, 6)), (EMPTY, EMPTY)):
        metric(one_hot(pred), one_hot(ref))
        dice(one_hot(pred), one_hot(ref))
    assert float(metric.aggregate()) == pytest.approx(DIAGONAL / 3)
    assert float(dice.aggregate()) == pytest.approx(2 / 3)
    assert not torch.isnan(metric.get_buffer()).any()


def test_two_planes_10_mm_apart_on_an_anisotropic_grid() -> None:
    """0.8 x 0.8 x 2.5 mm voxels, two one-voxel planes four slices apart: HD95 = ASD = 10 mm (in voxels it would
    read 4)."""
    shape, spacing = (12, 12, 10), (0.8, 0.8, 2.5)
    affine = torch.diag(torch.tensor([*spacing, 1.0]))

    def plane(z: int) -> MetaTensor:
        mask = torch.zeros(shape)
        mask[:, :, z] = 1
        return MetaTensor(torch.stack([1 - mask, mask])[None], affine=affine)

    y_pred, y = plane(2), plane(6)
    assert float(HausdorffDistanceMetric(percentile=95)(y_pred, y)) == pytest.approx(10.0)
    assert float(SurfaceDistanceMetric(symmetric=True)(y_pred, y)) == pytest.approx(10.0)
    assert float(HausdorffDistanceMetric(percentile=95)(y_pred.as_tensor(), y.as_tensor())) == pytest.approx(4.0)
