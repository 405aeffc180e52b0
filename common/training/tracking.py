"""TensorBoard records of a training, next to MONAI's own ``TensorBoardStatsHandler``.

The bundles write one event file under ``output_dir`` (``eval/``), as model-zoo bundles do: ``train_loss`` per
iteration and the training metric per epoch (``TensorBoardStatsHandler`` on the trainer), every validation
metric by its name (the same handler on the validator), the learning rate as ``lr`` (``LearningRateWriter``)
and a few image / label / prediction slices per validation (``ValidationSlices``). MONAI's
``TensorBoardImageHandler`` writes a 3D volume as a video, which TensorBoard shows only with moviepy installed
and which hides where the model errs; a slice through the structure reads at a glance. TensorBoard comes with
the ``tracking`` extra; without it the bundles train as before and say once how to get the records.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

__all__ = ["LearningRateWriter", "TensorBoardWriter", "ValidationSlices", "as_numpy", "center_slice",
           "tensorboard_available"]

logger = logging.getLogger(__name__)


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardWriter:
    """The ``SummaryWriter`` every TensorBoard handler of one run shares (``writer``; ``None`` when off or missing).

    Attached to the trainer, it closes the file when the run ends (each writer keeps a thread open until then;
    not on an exception: a handler of ``EXCEPTION_RAISED`` would make ignite swallow it).
    """

    def __init__(self, log_dir: str | os.PathLike[str], enabled: bool = True) -> None:
        self.writer = None
        if enabled and not tensorboard_available():
            logger.warning("TensorBoard is not installed, so no event files are written: "
                           "pip install -c requirements/constraints.txt -e '.[tracking]'")
        elif enabled:
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(log_dir, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(log_dir))

    def attach(self, engine: Engine) -> None:
        if self.writer is not None:
            engine.add_event_handler(Events.COMPLETED, self.close)

    def close(self, engine: Engine | None = None, *args: Any) -> None:
        if self.writer is not None:
            self.writer.close()


class LearningRateWriter:
    """``lr`` (the first parameter group's) at the end of every epoch, against the epoch."""

    def __init__(self, summary_writer: Any, optimizer: torch.optim.Optimizer, tag: str = "lr") -> None:
        self.writer, self.optimizer, self.tag = summary_writer, optimizer, tag

    def attach(self, engine: Engine) -> None:
        if self.writer is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.writer.add_scalar(self.tag, self.optimizer.param_groups[0]["lr"], engine.state.epoch)
        self.writer.flush()


def center_slice(label: np.ndarray, axis: int = -1) -> int:
    """The index along ``axis`` of the slice with the most foreground (the middle one for an empty label)."""
    axis = axis % label.ndim
    counts = (label > 0).sum(axis=tuple(a for a in range(label.ndim) if a != axis))
    return int(np.argmax(counts)) if counts.any() else label.shape[axis] // 2


class ValidationSlices:
    """Image, label and prediction of the first ``max_cases`` validation cases, as 2D slices in TensorBoard.

    For a 3D case the axial slice (last axis) with the most label foreground; a 2D case as it is. Images are
    scaled to [0, 1] per slice, label and prediction maps by the number of classes. Tags: ``val_image``,
    ``val_label``, ``val_pred`` (one image per case), the global step the training epoch.

    Args:
        summary_writer: where to write (``None``: nothing).
        max_cases: how many cases per validation.
        global_epoch_transform: the training epoch from the validator's epoch (the validator of a
            ``ValidationHandler`` already runs at the trainer's epoch).
        keys: the image, label and prediction keys of the validator's output.
    """

    def __init__(self, summary_writer: Any, max_cases: int = 3,
                 global_epoch_transform: Callable[[int], int] = lambda epoch: epoch,
                 keys: tuple[str, str, str] = ("image", "label", "pred")) -> None:
        self.writer, self.max_cases, self.epoch_of, self.keys = summary_writer, max_cases, global_epoch_transform, keys
        self._slices: dict[str, list[np.ndarray]] = {}

    def attach(self, engine: Engine) -> None:
        if self.writer is None:
            return
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._slices = {key: [] for key in self.keys}

    def _collect(self, engine: Engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        for item in outputs:
            if len(self._slices[self.keys[0]]) >= self.max_cases:
                return
            image, label, pred = (as_numpy(item[key]) for key in self.keys)
            label_map, pred_map = _class_map(label), _class_map(pred)
            if label_map.ndim == 3:
                z = center_slice(label_map)
                image, label_map, pred_map = image[..., z], label_map[..., z], pred_map[..., z]
            classes = max(label.shape[0] if label.shape[0] > 1 else 1, int(label_map.max()), int(pred_map.max()), 1)
            self._slices[self.keys[0]].append(_unit(image[0]))
            self._slices[self.keys[1]].append(label_map / classes)
            self._slices[self.keys[2]].append(pred_map / classes)

    def _write(self, engine: Engine) -> None:
        step = self.epoch_of(engine.state.epoch)
        for key, slices in self._slices.items():
            if slices:  # cases of one validation may differ in size: one image per case
                for i, s in enumerate(slices):
                    self.writer.add_image(f"val_{key}/{i}", np.rot90(s)[None].astype(np.float32), step)
        self.writer.flush()


def as_numpy(value: Any) -> np.ndarray:
    """A tensor or array as float32 numpy, on the CPU."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def _class_map(x: np.ndarray) -> np.ndarray:
    """Channel-first one-hot / probabilities -> class indices; a single channel -> its values."""
    return np.argmax(x, axis=0).astype(np.float32) if x.shape[0] > 1 else x[0]


def _unit(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(x)), float(np.max(x))
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
