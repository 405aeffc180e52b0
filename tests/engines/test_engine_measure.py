"""Peak memory per input voxel: positive, larger for a wider network, not fooled by memory freed earlier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.engines.measure import bytes_per_voxel, peak_rss_during

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIDES = [24, 48]


def pointwise(channels: int) -> nn.Module:
    """Two 1x1x1 convolutions: activations of ``channels`` floats per voxel, almost no compute."""
    return nn.Sequential(nn.Conv3d(1, channels, 1), nn.ReLU(), nn.Conv3d(channels, channels, 1)).eval()


#: small tensors that live on, as a pipeline's objects do
_LIVE: list[torch.Tensor] = []


def churn_memory() -> None:
    """Allocate and free ~150 MB in 3 MB pieces with small long-lived objects between them, as a pipeline run
    before the measurement does (``pocket engines`` measures after its calibration pass and the exports). glibc
    keeps such freed memory for reuse: an allocation that reuses it does not raise the process's RSS."""
    first = torch.ones(3 << 18)
    del first  # a freed mmapped block: glibc now serves blocks of this size from its heap
    pieces = []
    for _ in range(50):
        pieces.append(torch.ones(3 << 18))
        _LIVE.append(torch.ones(16))
    del pieces


def test_peak_rss_during_counts_what_fn_allocates() -> None:
    _, result = peak_rss_during(lambda: 7)
    assert result == 7
    base, _ = peak_rss_during(lambda: None)
    peak, x = peak_rss_during(lambda: torch.ones(64 << 20, dtype=torch.uint8))  # 64 MiB kept
    assert x.numel() == 64 << 20
    assert peak - base > 48 << 20


def test_wider_network_needs_more_memory_per_voxel() -> None:
    narrow = bytes_per_voxel(pointwise(4), 1, SIDES)
    wide = bytes_per_voxel(pointwise(32), 1, SIDES)
    assert 0 < narrow < wide
    # 32 channels hold at least one 32-float activation per voxel (128 bytes); well under 100 such tensors
    assert 100 < wide < 100 * 128


def test_measurement_is_not_fooled_by_memory_freed_earlier() -> None:
    churn_memory()
    narrow = bytes_per_voxel(pointwise(4), 1, SIDES)
    churn_memory()
    wide = bytes_per_voxel(pointwise(32), 1, SIDES)
    assert 0 < narrow < wide < 100 * 128
