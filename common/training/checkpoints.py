"""Small helpers the bundle configs call: resuming an interrupted training, finding input images."""

from __future__ import annotations

import glob
import os
import re

RESUME_PREFIX = "last"


def latest_checkpoint(ckpt_dir: str, prefix: str = RESUME_PREFIX) -> str | None:
    """Path of the newest ``<prefix>_checkpoint_epoch=N.pt`` written by the resume ``CheckpointSaver``."""
    found = []
    for path in glob.glob(os.path.join(ckpt_dir, f"{prefix}_checkpoint_epoch=*.pt")):
        m = re.search(r"epoch=(\d+)\.pt$", path)
        if m:
            found.append((int(m.group(1)), path))
    return max(found)[1] if found else None


def find_images(dataset_dir: str, pattern: str) -> list[dict]:
    """``[{"image": path}, ...]`` for the files matching ``pattern`` under ``dataset_dir`` (inference input)."""
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"{dataset_dir}: input folder does not exist.")
    files = sorted(f for f in glob.glob(os.path.join(dataset_dir, pattern)) if not os.path.basename(f).startswith("._"))
    if not files:
        raise FileNotFoundError(f"{dataset_dir}: no input image matches {pattern!r}.")
    return [{"image": f} for f in files]
