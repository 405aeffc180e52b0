"""Dice and Jaccard per class, pooled over every validation voxel and averaged per volume: ``per_class.csv``.

Why: the low-resolution paper (Ostrowski & Shafique, Table III) reports each BraTS class over all validation
slices together, i.e. from the confusion counts summed over the whole validation set, where a mean over volumes
(MONAI's ``MeanDice``) weighs a small tumour as much as a large one. Pooled counts need no rule for empty slices
or volumes; the per-volume columns use the repository's rule (both empty: 1) and say how many volumes were empty
in both.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["PerClassTable", "per_class_rows"]

logger = logging.getLogger(__name__)


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else num / den


def per_class_rows(counts: torch.Tensor, names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of the table from per-volume counts ``(volumes, classes, 3)`` of (TP, FP, FN)."""
    counts = counts.double()
    rows = []
    for c, name in enumerate(names):
        tp, fp, fn = counts[:, c].unbind(-1)
        dice = [_ratio(2 * a, 2 * a + b + d) for a, b, d in zip(tp.tolist(), fp.tolist(), fn.tolist())]
        jac = [_ratio(a, a + b + d) for a, b, d in zip(tp.tolist(), fp.tolist(), fn.tolist())]
        t, f_p, f_n = float(tp.sum()), float(fp.sum()), float(fn.sum())
        rows.append({
            "class": name,
            "pooled_dice": _ratio(2 * t, 2 * t + f_p + f_n),
            "pooled_jaccard": _ratio(t, t + f_p + f_n),
            "volume_dice": sum(dice) / len(dice) if dice else float("nan"),
            "volume_jaccard": sum(jac) / len(jac) if jac else float("nan"),
            "volumes": len(dice),
            "volumes_empty_in_both": int(((tp + fp + fn) == 0).sum()),
        })
    return rows


class PerClassTable:
    """Evaluation handler: per-class TP/FP/FN of every case, then ``<save_dir>/per_class.csv``.

    Args:
        save_dir: folder of the metric files.
        class_names: one name per class of the one-hot ``pred``/``label`` after the background channel.
        keys: the one-hot prediction and reference in each output item.
    """

    def __init__(self, save_dir: str, class_names: Sequence[str], keys: Sequence[str] = ("pred", "label")) -> None:
        self.save_dir = save_dir
        self.class_names = list(class_names)
        self.keys = tuple(keys)
        self.counts: list[torch.Tensor] = []
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._count)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Any) -> None:
        self.counts = []

    def _count(self, engine: Any) -> None:
        output = engine.state.output
        for item in output if isinstance(output, list) else [output]:
            pred, label = (torch.as_tensor(item[k])[1:].flatten(1).bool() for k in self.keys)
            if pred.shape[0] != len(self.class_names):
                raise ValueError(f"{pred.shape[0] + 1} one-hot channels, {len(self.class_names)} class names.")
            tp = (pred & label).sum(1)
            self.counts.append(torch.stack([tp, pred.sum(1) - tp, label.sum(1) - tp], dim=-1).cpu())

    def _write(self, engine: Any) -> None:
        counts = torch.stack(self.counts) if self.counts else torch.zeros(0, len(self.class_names), 3)
        self.rows = per_class_rows(counts, self.class_names)
        os.makedirs(self.save_dir, exist_ok=True)
        with open(os.path.join(self.save_dir, "per_class.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        logger.info("per class (pooled Dice): %s", ", ".join(f"{r['class']} {r['pooled_dice']:.3f}" for r in self.rows))
