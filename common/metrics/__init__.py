"""Segmentation metrics with one rule for empty masks, for the bundles, the experiments and the reports.

Both prediction and reference empty: Dice 1, HD95 0, ASD 0. Exactly one empty: Dice 0, HD95 = ASD = the
image's diagonal in mm (the value BraTS scoring gives a missed or spurious structure). Distances are in mm
(the voxel spacing is read from the images' metadata). No case is NaN, so no mean silently drops one.
"""

from common.metrics.empty_masks import (
    DiceMetric,
    HausdorffDistanceMetric,
    SurfaceDistanceMetric,
    empty_masks,
    image_diagonal,
    spacing_of,
)
from common.metrics.handlers import EmptyMaskCounter, HausdorffDistance, MeanDice, SurfaceDistance
from common.metrics.per_class import PerClassTable, per_class_rows

__all__ = ["DiceMetric", "EmptyMaskCounter", "HausdorffDistance", "HausdorffDistanceMetric", "MeanDice",
           "PerClassTable", "SurfaceDistance", "SurfaceDistanceMetric", "empty_masks", "image_diagonal",
           "per_class_rows", "spacing_of"]
