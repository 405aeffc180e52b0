"""Pictures of an evaluation, next to its metrics CSVs: what the model did on its worst, median and best case,
and how the per-case Dice and HD95 spread for each post-processing strategy.

``EvaluationPictures`` (a handler of the evaluator) writes

- ``cases.png``: one row per case (worst, median, best by per-case Dice of ``metric``, as ``<metric>_raw.csv``
  lists it), three orthogonal slices through the reference's foreground (a 2D case: the case itself), the
  image in grey with the reference (solid) and prediction (dashed) contours, one colour per class. The case
  ids and their Dice are in the PNG's ``Description`` text as JSON, so that a reader (or a test) can match them
  to the CSV without reading pixels.
- ``boxplot.png``: per-case Dice and HD95 (the mean over classes, as the CSVs' ``mean`` column) for every
  strategy the evaluation scored (``val_mean_dice``, ``val_mean_dice_largest_component``, ...).

Only three slices of the label and the prediction are kept per case, so memory does not grow with the volumes;
the three chosen images are read again from their files at the end, as the label is (the metrics are taken on
the label file's grid; the evaluator's own image may be resampled or reoriented), or, where a file does not hold
the case's grid (a 2D slice of a volume), the evaluator's image is shown.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from common.training.tracking import as_numpy as _as_numpy

__all__ = ["EvaluationPictures", "case_slices", "pick_cases", "read_description"]

logger = logging.getLogger(__name__)

STRATEGY_METRICS = {"val_mean_dice": "Dice", "val_hd95": "HD95 (mm)"}


def pick_cases(scores: Sequence[float]) -> dict[str, int]:
    """Indices of the worst, median (the lower one for an even count) and best score; ties keep list order."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    return {"worst": order[0], "median": order[(len(order) - 1) // 2], "best": order[-1]}


def case_slices(label: np.ndarray) -> list[tuple[int, int]]:
    """``(axis, index)`` of three orthogonal slices through the foreground's centre (the volume's if empty)."""
    fg = np.argwhere(label > 0)
    centre = fg.mean(axis=0) if len(fg) else (np.asarray(label.shape) - 1) / 2
    return [(axis, int(round(centre[axis]))) for axis in range(label.ndim)]


def read_description(png: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON ``EvaluationPictures`` stores in a PNG's ``Description`` text."""
    from PIL import Image

    with Image.open(png) as image:
        return json.loads(image.text["Description"])


class EvaluationPictures:
    """Write ``cases.png`` and ``boxplot.png`` into ``save_dir`` when the evaluation ends.

    Args:
        save_dir: the evaluation's output folder (where ``MetricsSaver`` writes the CSVs).
        metric: the per-case metric that ranks the cases (a key of ``engine.state.metric_details``).
        keys: the image, label and prediction keys of the evaluator's output (channel-first; one-hot or a
            single channel of class values).
        strategies: the metrics of the box plot: metric name -> axis title; every ``metric_details`` key equal to
            one of them or starting with it and ``_`` is one strategy (the suffix; ``none`` for the name itself).
    """

    def __init__(self, save_dir: str | os.PathLike[str], metric: str = "val_mean_dice",
                 keys: Sequence[str] = ("image", "label", "pred"),
                 strategies: dict[str, str] | None = None) -> None:
        self.save_dir = Path(save_dir)
        self.metric = metric
        self.keys = tuple(keys)
        self.strategies = STRATEGY_METRICS if strategies is None else strategies
        self.cases: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.cases.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for item in outputs:
            image_key, label_key, pred_key = self.keys
            label, pred = _class_map(item[label_key]), _class_map(item[pred_key])
            cuts = case_slices(label)
            image = item[image_key]
            name = _filename(image) or f"case {len(self.cases)}"
            own = _as_numpy(image)[0] if tuple(image.shape[1:]) == label.shape else None
            self.cases.append({
                "id": name, "cuts": cuts, "spacing": _spacing(item[label_key], label.ndim),
                "label": [_cut(label, c) for c in cuts], "pred": [_cut(pred, c) for c in cuts],
                "image": [_cut(own, c) for c in cuts] if own is not None else None,
                "classes": max(int(label.max()), int(pred.max()), 1),
            })

    def _write(self, engine: Engine) -> None:
        details = getattr(engine.state, "metric_details", {}) or {}
        if self.metric not in details or not self.cases:
            logger.warning("no per-case %s to draw the evaluation pictures from", self.metric)
            return
        scores = _per_case_mean(details[self.metric])
        if len(scores) != len(self.cases):  # e.g. a distributed evaluation that gathered other ranks' cases
            logger.warning("%d scores for %d cases seen here: no pictures", len(scores), len(self.cases))
            return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        cases_png = self._cases_png(scores)
        box_png = self._box_png(details)
        logger.info("evaluation pictures: %s", ", ".join(str(p) for p in (cases_png, box_png) if p))

    def _cases_png(self, scores: list[float]) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        picked = pick_cases(scores)
        ndim = len(self.cases[0]["cuts"])
        cols = ndim if ndim == 3 else 1
        fig, axes = plt.subplots(3, cols, figsize=(3.2 * cols, 9.6), squeeze=False)
        for row, (rank, index) in enumerate(picked.items()):
            case = self.cases[index]
            images = _reload_slices(case["id"], case["cuts"], case["label"]) or case["image"]
            for col in range(cols):
                ax = axes[row][col]
                label, pred = case["label"][col], case["pred"][col]
                rows_cols = [a for a in range(len(case["spacing"])) if a != case["cuts"][col][0]][::-1]
                aspect = case["spacing"][rows_cols[0]] / case["spacing"][rows_cols[1]] if cols == 3 else 1.0
                ax.imshow(np.rot90(images[col]) if images else np.zeros_like(np.rot90(label)), cmap="gray",
                          aspect=aspect)  # voxels drawn at their size in mm
                colors = plt.get_cmap("tab10")
                for k in range(1, case["classes"] + 1):
                    for mask, style in ((label, "solid"), (pred, "dashed")):
                        if (mask == k).any() and (mask != k).any():
                            ax.contour(np.rot90(mask == k).astype(float), levels=[0.5], colors=[colors(k - 1)],
                                       linestyles=style, linewidths=1.0)
                ax.set_xticks([])
                ax.set_yticks([])
                if cols == 3:
                    axis, at = case["cuts"][col]
                    ax.set_xlabel(f"axis {axis}, slice {at}", fontsize=8)
            axes[row][0].set_ylabel(f"{rank}: {os.path.basename(case['id'])}\n{self.metric} {scores[index]:.3f}",
                                    fontsize=9)
        fig.suptitle("reference: solid, prediction: dashed (one colour per class)", fontsize=10)
        fig.tight_layout()
        description = {"metric": self.metric, **{rank: {"id": self.cases[i]["id"], "score": scores[i]}
                                                 for rank, i in picked.items()}}
        out = self.save_dir / "cases.png"
        fig.savefig(out, dpi=100, metadata={"Description": json.dumps(description)})
        plt.close(fig)
        return out

    def _box_png(self, details: dict[str, Any]) -> Path | None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = []
        for base, title in self.strategies.items():
            found = {("none" if k == base else k[len(base) + 1:]): _per_case_mean(v) for k, v in details.items()
                     if k == base or k.startswith(base + "_")}
            if found:
                panels.append((title, found))
        if not panels:
            return None
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
        for ax, (title, found) in zip(axes[0], panels):
            ax.boxplot(list(found.values()), showmeans=True)
            ax.set_xticks(range(1, len(found) + 1), [s.replace("_", "\n") for s in found], fontsize=8)
            ax.set_title(f"{title} per case ({len(next(iter(found.values())))} cases)", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle("per post-processing strategy (triangle: mean)", fontsize=10)
        fig.tight_layout()
        out = self.save_dir / "boxplot.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out


def _per_case_mean(values: Any) -> list[float]:
    """Per-case mean over classes, ignoring NaN (the ``mean`` column MONAI's ``MetricsSaver`` writes)."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    array = array.reshape(len(array), -1).astype(float)
    with np.errstate(all="ignore"):
        return [float(v) for v in np.nanmean(array, axis=1)]


def _class_map(value: Any) -> np.ndarray:
    x = _as_numpy(value)
    return np.argmax(x, axis=0).astype(np.int16) if x.shape[0] > 1 else np.rint(x[0]).astype(np.int16)


def _cut(volume: np.ndarray, cut: tuple[int, int]) -> np.ndarray:
    axis, index = cut
    return np.take(volume, index, axis=axis) if volume.ndim == 3 else volume


def _spacing(value: Any, ndim: int) -> list[float]:
    """Voxel size in mm from a MetaTensor's affine (1 mm where there is none)."""
    affine = (getattr(value, "meta", None) or {}).get("affine")
    if affine is None:
        return [1.0] * ndim
    affine = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=float)
    spacing = np.sqrt((affine[:ndim, :ndim] ** 2).sum(axis=0))
    return [float(v) if v > 0 else 1.0 for v in spacing]


def _filename(image: Any) -> str | None:
    name = (getattr(image, "meta", None) or {}).get("filename_or_obj")
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    return str(name) if name else None


def _reload_slices(filename: str, cuts: list[tuple[int, int]], labels: list[np.ndarray]) -> list[np.ndarray] | None:
    """The image's slices read again from its file (its first channel), or ``None`` when it is not on the
    label's grid there either (the picture then shows the contours alone)."""
    from monai.transforms import LoadImage

    try:
        image = _as_numpy(LoadImage(image_only=True, ensure_channel_first=True)(filename))[0]
    except Exception as exc:  # a picture is not worth failing an evaluation for
        logger.warning("%s: not read again for the picture (%s)", filename, exc)
        return None
    slices = [_cut(image, c) for c in cuts]
    return slices if all(s.shape == lab.shape for s, lab in zip(slices, labels)) else None
