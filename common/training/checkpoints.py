"""Resuming an interrupted training: the newest checkpoint the resume ``CheckpointSaver`` wrote."""

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

