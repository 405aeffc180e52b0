"""Helpers of the COVIDx chest X-ray classification bundle: grey-scale loading and the prediction CSV.

COVIDx mixes grey and RGB PNG/JPEG files, so the loader converts every image to one grey channel
(:func:`to_grey`, a ``PILReader`` converter). MONAI's stock ``CSVSaver`` writes bare numbers without a
header, which a reader of the results cannot interpret; :class:`PredictionCSV` is a drop-in ``saver``
for MONAI's ``ClassificationSaver`` handler that writes one named row per image instead::

    filename,predicted_class,predicted_label,probability_negative,probability_positive[,label]

Config use (``configs/inference.json``)::

    {"_target_": "ClassificationSaver", "output_transform": "$common.datasets.covidx.prediction_rows()",
     "batch_transform": "$lambda x: [xx['image'].meta for xx in x]",
     "saver": {"_target_": "common.datasets.covidx.PredictionCSV", "output_dir": "@output_dir"}}
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["CLASS_NAMES", "GREY_MODES", "PredictionCSV", "prediction_rows", "to_grey"]

CLASS_NAMES = ("negative", "positive")
# Pillow modes that already hold one grey channel (8-bit, 16-bit, 32-bit int, float): kept as they are so
# that 16-bit films keep their full range (converting them to "L" would clip at 255).
GREY_MODES = ("L", "I", "I;16", "I;16B", "I;16L", "F")


def to_grey(img: Image.Image) -> Image.Image:
    """``PILReader`` converter: one grey channel for any input mode (RGB, RGBA, palette, 1-bit, grey)."""
    return img if img.mode in GREY_MODES else img.convert("L")


def prediction_rows(label_key: str | None = None, pred_key: str = "pred") -> Callable[[Any], list[torch.Tensor]]:
    """``output_transform`` for ``ClassificationSaver``: per image, the class probabilities [+ the label].

    The label (a class index or a one-hot vector) is appended as one trailing number so that the saver,
    which receives only one tensor per image, can write it in its own column.
    """

    def rows(output: Any) -> list[torch.Tensor]:
        items = output if isinstance(output, (list, tuple)) else [output]
        out = []
        for item in items:
            row = torch.as_tensor(item[pred_key]).detach().float().flatten().cpu()
            if label_key is not None:
                label = torch.as_tensor(item[label_key]).detach().float().flatten().cpu()
                index = label.argmax() if label.numel() > 1 else label[0]
                row = torch.cat([row, index.reshape(1)])
            out.append(row)
        return out

    return rows


class PredictionCSV:
    """CSV writer for ``ClassificationSaver(saver=...)``: file name, predicted class, class probabilities.

    ``save_batch`` receives rows built by :func:`prediction_rows` (``len(class_names)`` probabilities,
    then the label when ``with_label``); ``finalize`` writes the table with a header, in input order.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike = "./",
        filename: str = "predictions.csv",
        class_names: Sequence[str] = CLASS_NAMES,
        with_label: bool = False,
    ) -> None:
        self.path = Path(output_dir) / filename
        self.class_names = [str(c) for c in class_names]
        self.with_label = with_label
        self._rows: list[list[Any]] = []

    @property
    def header(self) -> list[str]:
        cols = ["filename", "predicted_class", "predicted_label"]
        cols += [f"probability_{c}" for c in self.class_names]
        return cols + (["label"] if self.with_label else [])

    def save_batch(self, batch_data: torch.Tensor | np.ndarray, meta_data: dict | None = None) -> None:
        data = batch_data.detach().cpu().numpy() if isinstance(batch_data, torch.Tensor) else np.asarray(batch_data)
        k = len(self.class_names)
        expected = k + int(self.with_label)
        if data.ndim != 2 or data.shape[1] != expected:
            raise ValueError(
                f"PredictionCSV expects rows of {expected} numbers ({k} class probabilities"
                f"{' and the label' if self.with_label else ''}); got an array of shape {tuple(data.shape)}."
            )
        names = list(meta_data.get("filename_or_obj", [])) if meta_data else []
        for i, row in enumerate(data):
            probs = row[:k]
            cls = int(np.argmax(probs))
            name = str(names[i]) if i < len(names) else str(len(self._rows))
            record: list[Any] = [name, cls, self.class_names[cls], *(f"{p:.6f}" for p in probs)]
            if self.with_label:
                record.append(int(round(float(row[k]))))
            self._rows.append(record)

    def finalize(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(self.header)
            writer.writerows(self._rows)
        self._rows = []
