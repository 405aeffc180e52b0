"""Whole-volume passes when memory allows, sliding windows otherwise: the window is chosen per volume.

A fully convolutional network can take the whole (padded) volume at once, and a sliding window with overlap
0.5 repeats each voxel's work about three times. ``BudgetedInferer`` estimates the pass's peak memory from
the engine's measured bytes per input voxel (``pocket engines`` records it next to the checkpoint) and runs the
whole volume in one window when that fits the budget; otherwise, or without a measurement, it is the bundle's
sliding-window inferer unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import psutil
import torch
from monai.inferers import Inferer, SlidingWindowInferer

__all__ = ["BudgetedInferer", "memory_budget", "whole_window"]

logger = logging.getLogger(__name__)


def memory_budget(max_memory_gb: float | str | None = "auto") -> float:
    """Bytes a pass may use: ``max_memory_gb``, or with ``"auto"`` half of the memory available now."""
    if max_memory_gb in (None, "auto"):
        return 0.5 * psutil.virtual_memory().available
    return float(max_memory_gb) * 1024**3


def whole_window(spatial: Sequence[int], multiple: Sequence[int] | int) -> list[int]:
    """The input's spatial size rounded up to the network's ``multiple`` (the one window of a whole pass)."""
    m = [multiple] * len(spatial) if isinstance(multiple, int) else list(multiple)
    return [int(math.ceil(s / k) * k) for s, k in zip(spatial, m)]


class BudgetedInferer(Inferer):
    """``SlidingWindowInferer`` that passes the whole volume at once when its estimated memory fits.

    Args:
        roi_size, sw_batch_size, overlap, mode, sigma_scale: the sliding window used when the volume does not fit.
        max_memory_gb: the memory budget of one pass (``"auto"``: half of the memory available at the first call,
            kept for later volumes: an engine's own buffers, reused by the next pass, must not shrink it).
        multiple: what the network's input sizes must be multiples of; default: the network's ``multiple``.
        bytes_per_voxel: peak bytes per input voxel; default: the engine's measured ``bytes_per_voxel``. Without
            either the volume always goes through the sliding window.
        progress: a tqdm bar over the windows of a sliding-window pass (default: on a terminal only).
    """

    def __init__(self, roi_size: Sequence[int], sw_batch_size: int = 1, overlap: float = 0.5, mode: str = "gaussian",
                 sigma_scale: float = 0.125, max_memory_gb: float | str | None = "auto",
                 multiple: Sequence[int] | int | None = None, bytes_per_voxel: float | None = None,
                 progress: bool | None = None, **kwargs: Any) -> None:
        from common.training.progress import on_terminal

        super().__init__()
        self.sliding = SlidingWindowInferer(roi_size, sw_batch_size, overlap, mode=mode, sigma_scale=sigma_scale,
                                            progress=on_terminal() if progress is None else progress, **kwargs)
        self.max_memory_gb = max_memory_gb
        self.multiple = multiple
        self.bytes_per_voxel = bytes_per_voxel
        self.kwargs = kwargs
        self.last_choice = ""
        self._budget: float | None = None

    def window(self, inputs: torch.Tensor, network: Any) -> list[int] | None:
        """The whole-volume window for ``inputs`` when it fits the budget, else ``None`` (sliding window)."""
        multiple = self.multiple if self.multiple is not None else getattr(network, "multiple", None)
        per_voxel = self.bytes_per_voxel if self.bytes_per_voxel is not None else getattr(network, "bytes_per_voxel",
                                                                                         None)
        if multiple is None or not per_voxel:
            self.last_choice = "sliding window (no measured memory per voxel)"
            return None
        window = whole_window(inputs.shape[2:], multiple)
        need = inputs.shape[0] * math.prod(window) * float(per_voxel)
        if self._budget is None:
            self._budget = memory_budget(self.max_memory_gb)
        budget = self._budget
        if need > budget:
            gb = (need / 1024**3, budget / 1024**3)
            self.last_choice = f"sliding window (whole {window} needs ~{gb[0]:.1f} GB > {gb[1]:.1f} GB)"
            return None
        self.last_choice = f"whole volume {window} (~{need / 1024**3:.1f} GB of {budget / 1024**3:.1f} GB)"
        return window

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        window = self.window(inputs, network)
        if window is None:
            result = self.sliding(inputs, network, *args, **kwargs)
        else:
            whole = SlidingWindowInferer(window, 1, 0.0, mode="constant", **self.kwargs)
            result = whole(inputs, network, *args, **kwargs)
        logger.debug("inferer: %s", self.last_choice)
        return result
