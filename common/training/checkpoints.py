"""Checkpoints a kill cannot truncate, and resuming an interrupted training from the newest one."""

from __future__ import annotations

import glob
import os
import re
from typing import Any

import torch
from monai.handlers import CheckpointLoader as MonaiCheckpointLoader
from monai.handlers import CheckpointSaver as MonaiCheckpointSaver

from common.errors import InvalidInputError

__all__ = ["CheckpointLoader", "CheckpointSaver", "latest_checkpoint"]

RESUME_PREFIX = "last"


def latest_checkpoint(ckpt_dir: str, prefix: str = RESUME_PREFIX) -> str | None:
    """Path of the newest ``<prefix>_checkpoint_epoch=N.pt`` written by the resume ``CheckpointSaver``."""
    found = []
    for path in glob.glob(os.path.join(ckpt_dir, f"{prefix}_checkpoint_epoch=*.pt")):
        m = re.search(r"epoch=(\d+)\.pt$", path)
        if m:
            found.append((int(m.group(1)), path))
    return max(found)[1] if found else None



class CheckpointSaver(MonaiCheckpointSaver):
    """MONAI's ``CheckpointSaver``, each file written atomically (a temporary file in the same folder, renamed).

    MONAI's saver writes in place (``atomic=False``, to keep the file readable by the group): a training killed
    during a write left a truncated ``model.pt`` or resume checkpoint under its real name, and the resume then
    failed on it. ignite's atomic write also sets the group/others read bits, so nothing is lost by it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler._atomic = True


class CheckpointLoader(MonaiCheckpointLoader):
    """MONAI's ``CheckpointLoader``; a checkpoint that does not fit the config's network is one sentence.

    ``load_state_dict`` reports a wrong width or depth as a page of "size mismatch" / "Missing key" lines inside
    a traceback; the user needs to know which file and which setting to look at.
    """

    #: objects a resume checkpoint written before they existed does not hold: skipped, not an error
    OPTIONAL = ("time_budget",)

    def __call__(self, engine: Any) -> None:
        absent = self._absent_optional()
        kept = {k: self.load_dict.pop(k) for k in absent}
        try:
            super().__call__(engine)
        except RuntimeError as err:
            text = str(err)
            if "size mismatch" not in text and "Missing key" not in text and "Unexpected key" not in text:
                raise
            detail = next((ln.strip() for ln in text.splitlines() if "size mismatch" in ln), "")
            detail = re.sub(r"\s+", " ", detail.split(":", 1)[-1].strip()) if detail else "its layers differ"
            raise InvalidInputError(f"{self.load_path}: the checkpoint does not fit this config's network "
                                    f"({detail[:200].rstrip('.')}); were arch, pocket, widths and depth the same as "
                                    "in training?") from err
        finally:
            self.load_dict.update(kept)

    def _absent_optional(self) -> list[str]:
        wanted = [k for k in self.OPTIONAL if k in self.load_dict]
        if not wanted or len(self.load_dict) == 1 or not os.path.isfile(str(self.load_path)):
            return []
        saved = torch.load(str(self.load_path), map_location="cpu", weights_only=True, mmap=True)
        return [k for k in wanted if isinstance(saved, dict) and k not in saved]
