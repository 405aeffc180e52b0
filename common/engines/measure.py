"""Peak memory per input voxel of an engine, measured on two input sizes (the slope leaves out fixed costs)."""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil
import torch

__all__ = ["bytes_per_voxel", "peak_rss_during"]

_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def release_free_memory() -> None:
    """Give the memory freed earlier in the process back to the system (glibc ``malloc_trim``; elsewhere a no-op).

    Without it an allocation can reuse what glibc kept from earlier work (a calibration pass, the exports) and
    the RSS does not grow: the measured slope then comes out too small, or zero.
    """
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def peak_rss_during(fn: Callable[[], Any], interval: float = 0.002) -> tuple[int, Any]:
    """Run ``fn`` and return (the process's peak resident memory while it ran, in bytes; ``fn``'s result).

    A thread samples the RSS every ``interval`` seconds, so memory allocated by native runtimes (OpenVINO,
    ONNX Runtime, oneDNN) counts as well as torch's.
    """
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    return max(peak[0], proc.memory_info().rss), result


def bytes_per_voxel(network: Callable[[torch.Tensor], Any], in_channels: int, sides: Sequence[int]) -> float:
    """Peak bytes per input voxel of ``network`` (no gradients): the slope of peak RSS between two cube sizes.

    The smaller cube runs first, so memory a runtime keeps between calls is already counted there and the slope
    is what a larger input adds; fixed costs (weights, compiled kernels, the interpreter) drop out.
    """
    sides = sorted(sides[:2])
    peaks = []
    with torch.no_grad():
        for side in sides:
            x = torch.randn(1, in_channels, side, side, side)
            release_free_memory()
            peak, _ = peak_rss_during(lambda x=x: network(x))
            peaks.append(peak)
    voxels = [s**3 for s in sides]
    slope = (peaks[1] - peaks[0]) / (voxels[1] - voxels[0])
    return slope if slope > 0 else peaks[1] / voxels[1]
