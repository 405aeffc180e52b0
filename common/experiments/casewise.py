"""Per-case metrics of a bundle evaluation, pooled and summarised the same way by every experiment table."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["METRICS", "describe", "per_case", "write_csv"]

#: metric file stem in the run's eval/ folder -> column title
METRICS = {"val_mean_dice": "Dice", "val_hd95": "HD95 (mm)", "val_asd": "ASD (mm)"}


def per_case(eval_dir: Path, metric: str) -> dict[str, float]:
    """``{case file: value}`` from a bundle evaluation's ``<metric>_raw.csv`` (the mean over its classes)."""
    with open(eval_dir / f"{metric}_raw.csv", newline="") as f:
        return {row["filename"]: float(row["mean"]) for row in csv.DictReader(f)}


def describe(values: Sequence[float]) -> dict[str, float]:
    """n, mean, sample standard deviation (ddof 1) and median of finite values."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "median": float("nan")}
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "median": float(np.median(v))}


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
