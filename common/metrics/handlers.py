"""Ignite handlers for the bundles' configs: MONAI's ``MeanDice`` / ``HausdorffDistance`` / ``SurfaceDistance``
with the empty-mask rule, and a count of the empty masks each summary is taken over."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.handlers import IgniteMetricHandler

from common.metrics.empty_masks import DiceMetric, HausdorffDistanceMetric, SurfaceDistanceMetric

__all__ = ["EmptyMaskCounter", "HausdorffDistance", "MeanDice", "SurfaceDistance"]

logger = logging.getLogger(__name__)


def _default_transform(x: Any) -> Any:
    return x["y_pred"], x["y"]


class MeanDice(IgniteMetricHandler):
    """``monai.handlers.MeanDice`` with :class:`~common.metrics.DiceMetric` (no case is NaN)."""

    def __init__(self, include_background: bool = True, reduction: str = "mean", num_classes: int | None = None,
                 output_transform: Callable = _default_transform, save_details: bool = True) -> None:
        super().__init__(metric_fn=DiceMetric(include_background, reduction, num_classes=num_classes),
                         output_transform=output_transform, save_details=save_details)


class HausdorffDistance(IgniteMetricHandler):
    """``monai.handlers.HausdorffDistance`` in mm with the empty-mask rule."""

    def __init__(self, include_background: bool = False, percentile: float | None = None, directed: bool = False,
                 reduction: str = "mean", output_transform: Callable = _default_transform,
                 save_details: bool = True) -> None:
        metric = HausdorffDistanceMetric(include_background, percentile=percentile, directed=directed,
                                         reduction=reduction)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)


class SurfaceDistance(IgniteMetricHandler):
    """``monai.handlers.SurfaceDistance`` (average surface distance) in mm with the empty-mask rule."""

    def __init__(self, include_background: bool = False, symmetric: bool = False, reduction: str = "mean",
                 output_transform: Callable = _default_transform, save_details: bool = True) -> None:
        metric = SurfaceDistanceMetric(include_background, symmetric=symmetric, reduction=reduction)
        super().__init__(metric_fn=metric, output_transform=output_transform, save_details=save_details)


class EmptyMaskCounter:
    """Counts, over an evaluation, the cases whose prediction or reference has an empty foreground class.

    Written to ``<save_dir>/empty_masks.csv`` (one row per key: cases, cases with an empty class) and logged in
    one line, so that every summary says over how many cases it is taken and how many were empty.

    Args:
        save_dir: folder of the metric files (``MetricsSaver``'s).
        keys: one-hot outputs to inspect (e.g. ``["pred", "label"]`` and each post-processing's prediction).
        include_background: whether channel 0 counts as a class.
    """

    def __init__(self, save_dir: str, keys: Sequence[str] = ("pred", "label"),
                 include_background: bool = False) -> None:
        self.save_dir = save_dir
        self.keys = list(keys)
        self.include_background = include_background
        self.counts: dict[str, list[int]] = {}

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._count)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Any) -> None:
        self.counts = {key: [0, 0] for key in self.keys}

    def _count(self, engine: Any) -> None:
        output = engine.state.output
        items = output if isinstance(output, list) else [output]  # decollated batch, or one dict
        for key in self.keys:
            for mask in (item[key] for item in items):
                mask = torch.as_tensor(mask)
                classes = mask if self.include_background or mask.shape[0] == 1 else mask[1:]
                self.counts[key][0] += 1
                self.counts[key][1] += int(bool((classes.flatten(1).sum(-1) == 0).any()))

    def _write(self, engine: Any) -> None:
        os.makedirs(self.save_dir, exist_ok=True)
        with open(os.path.join(self.save_dir, "empty_masks.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["key", "cases", "cases_with_an_empty_class"])
            for key, (cases, empty) in self.counts.items():
                writer.writerow([key, cases, empty])
        logger.info("metrics over %s", "; ".join(f"{n} cases of {k} ({e} with an empty class)"
                                                  for k, (n, e) in self.counts.items()))
