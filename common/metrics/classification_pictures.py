"""The ROC curve and the confusion matrix of a classification evaluation, drawn from its ``predictions.csv``.

The table (file name, predicted class, one ``probability_<class>`` column per class, the label) is what the
evaluation already writes, so the pictures show exactly the cases and scores behind its metrics. ``roc.png``:
one curve per class against the rest (for two classes the positive one), with its AUC; ``confusion.png``: counts
and row percentages, reference classes in rows. The AUC of each curve is in the PNG's ``Description`` text as
JSON.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np

__all__ = ["read_predictions", "roc_curve", "write_classification_pictures"]

logger = logging.getLogger(__name__)


def read_predictions(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Class names, probabilities (cases x classes) and labels of a ``predictions.csv`` with a label column."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "label" not in rows[0]:
        raise ValueError(f"{path}: no rows with a label column to draw a ROC curve from.")
    names = [c[len("probability_"):] for c in rows[0] if c.startswith("probability_")]
    probs = np.array([[float(r[f"probability_{n}"]) for n in names] for r in rows])
    labels = np.array([int(float(r["label"])) for r in rows])
    return names, probs, labels


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """False and true positive rates at every threshold, and the area under them (trapezoids; ties as one step)."""
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order].astype(bool)
    last_of_tie = np.r_[np.diff(scores) != 0, True]
    tp, fp = np.cumsum(positive)[last_of_tie], np.cumsum(~positive)[last_of_tie]
    p, n = max(int(positive.sum()), 1), max(int((~positive).sum()), 1)
    tpr, fpr = np.r_[0.0, tp / p], np.r_[0.0, fp / n]
    return fpr, tpr, float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def write_classification_pictures(predictions: str | os.PathLike[str],
                                  out_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write ``roc.png`` and ``confusion.png`` next to ``predictions`` (or into ``out_dir``); return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, probs, labels = read_predictions(predictions)
    out = Path(out_dir) if out_dir is not None else Path(predictions).parent
    out.mkdir(parents=True, exist_ok=True)

    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    aucs = {}
    for k in ([len(names) - 1] if len(names) == 2 else range(len(names))):
        fpr, tpr, auc = roc_curve(probs[:, k], labels == k)
        aucs[names[k]] = auc
        ax.plot(fpr, tpr, label=f"{names[k]} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(f"ROC, {len(labels)} images", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    roc_png = out / "roc.png"
    fig.savefig(roc_png, dpi=100, metadata={"Description": json.dumps({"auc": aucs, "cases": int(len(labels))})})
    plt.close(fig)

    predicted = probs.argmax(axis=1)
    matrix = np.zeros((len(names), len(names)), dtype=int)
    for ref, pred in zip(labels, predicted):
        matrix[ref, pred] += 1
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(matrix, cmap="Blues")
    for i in range(len(names)):
        for j in range(len(names)):
            share = matrix[i, j] / max(matrix[i].sum(), 1)
            ax.text(j, i, f"{matrix[i, j]}\n{share:.0%}", ha="center", va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(f"confusion matrix, {len(labels)} images", fontsize=10)
    fig.tight_layout()
    confusion_png = out / "confusion.png"
    fig.savefig(confusion_png, dpi=100, metadata={"Description": json.dumps({"matrix": matrix.tolist(),
                                                                             "classes": names})})
    plt.close(fig)
    logger.info("evaluation pictures: %s, %s", roc_png, confusion_png)
    return [roc_png, confusion_png]
