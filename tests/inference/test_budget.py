"""BudgetedInferer: the whole (padded) volume in one pass when its measured memory fits, sliding windows otherwise."""

from __future__ import annotations

import psutil
import pytest
import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from common.inference.budget import BudgetedInferer, memory_budget, whole_window
from common.networks import get_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE = (1, 1, 20, 18, 13)  # no side a multiple of 8


class Pointwise(nn.Module):
    """A 1x1x1 convolution (its output at a voxel does not depend on the window) that counts its calls and, like
    the repository's networks, refuses sizes that are not multiples of ``multiple``."""

    def __init__(self, multiple: list[int] | None = None, bytes_per_voxel: float | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(1, 2, 1)
        self.calls: list[tuple[int, ...]] = []
        if multiple is not None:
            self.multiple = multiple
        if bytes_per_voxel is not None:
            self.bytes_per_voxel = bytes_per_voxel
        self.check = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        if self.check is not None and any(s % m for s, m in zip(x.shape[2:], self.check)):
            raise ValueError(f"{list(x.shape[2:])} is not a multiple of {self.check}")
        return self.conv(x)


def test_whole_volume_in_one_call_when_it_fits() -> None:
    net = Pointwise(multiple=[8, 8, 8])
    inferer = BudgetedInferer([8, 8, 8], max_memory_gb=4, multiple=[8, 8, 8], bytes_per_voxel=1000.0)
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        out = inferer(x, net)
    assert net.calls == [(1, 1, 24, 24, 16)]  # one pass of the padded volume
    assert out.shape == (1, 2, *SHAPE[2:])
    assert inferer.last_choice.startswith("whole volume") and "[24, 24, 16]" in inferer.last_choice
    with torch.no_grad():
        torch.testing.assert_close(out, net.conv(x), atol=1e-5, rtol=1e-5)
        sliding = SlidingWindowInferer([8, 8, 8], 1, 0.5, mode="gaussian")(x, net.conv)
    torch.testing.assert_close(out, sliding, atol=1e-5, rtol=1e-5)


def test_network_attributes_are_the_default_measurement() -> None:
    # what load_engine leaves on the network: multiple (the architecture) and bytes_per_voxel (engine.json)
    net = Pointwise(multiple=[8, 8, 8], bytes_per_voxel=1000.0)
    inferer = BudgetedInferer([8, 8, 8], max_memory_gb=4)
    with torch.no_grad():
        out = inferer(torch.randn(*SHAPE), net)
    assert len(net.calls) == 1 and out.shape == (1, 2, *SHAPE[2:])


def test_real_network_takes_the_padded_whole_volume() -> None:
    torch.manual_seed(0)
    net = get_network("unet", 3, 1, 2, init_filters=4, depth=2, pocket=True).eval()  # multiple [4, 4, 4]
    net.bytes_per_voxel = 500.0
    x = torch.randn(1, 1, 10, 9, 7)
    with pytest.raises(ValueError):
        net(x)
    with torch.no_grad():
        out = BudgetedInferer([8, 8, 8], max_memory_gb=4)(x, net)
    assert out.shape == (1, 2, 10, 9, 7)


def test_tiny_budget_falls_back_to_the_sliding_window() -> None:
    net = Pointwise(multiple=[8, 8, 8])
    inferer = BudgetedInferer([8, 8, 8], overlap=0.5, max_memory_gb=1e-6, multiple=[8, 8, 8],
                              bytes_per_voxel=1000.0)
    x = torch.randn(*SHAPE)
    with torch.no_grad():
        out = inferer(x, net)
    assert len(net.calls) > 1 and set(net.calls) == {(1, 1, 8, 8, 8)}
    assert inferer.last_choice.startswith("sliding window") and "GB" in inferer.last_choice
    assert out.shape == (1, 2, *SHAPE[2:])
    torch.testing.assert_close(out, net.conv(x).detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("multiple", "per_voxel"), [(None, None), ([8, 8, 8], None), (None, 1000.0),
                                                      ([8, 8, 8], 0.0)], ids=["none", "no_bpv", "no_multiple", "zero"])
def test_without_a_measurement_it_is_the_sliding_window(multiple: list[int] | None, per_voxel: float | None) -> None:
    net = Pointwise(multiple=[8, 8, 8])
    del net.multiple  # the network itself says nothing either
    inferer = BudgetedInferer([8, 8, 8], max_memory_gb=1000, multiple=multiple, bytes_per_voxel=per_voxel)
    with torch.no_grad():
        inferer(torch.randn(*SHAPE), net)
    assert len(net.calls) > 1
    assert inferer.last_choice == "sliding window (no measured memory per voxel)"


def test_the_choice_is_made_per_volume() -> None:
    net = Pointwise(multiple=[8, 8, 8])
    # 16^3 padded voxels * 100 B = 0.4 MB fits 1 MB; 32^3 * 100 B = 3.3 MB does not
    inferer = BudgetedInferer([8, 8, 8], max_memory_gb=1 / 1024, multiple=8, bytes_per_voxel=100.0)
    with torch.no_grad():
        inferer(torch.randn(1, 1, 16, 15, 9), net)
        assert inferer.last_choice.startswith("whole volume") and len(net.calls) == 1
        inferer(torch.randn(1, 1, 32, 30, 25), net)
    assert inferer.last_choice.startswith("sliding window") and len(net.calls) > 2


def test_whole_window_rounds_up_to_the_multiple() -> None:
    assert whole_window([20, 18, 13], 8) == [24, 24, 16]
    assert whole_window([16, 16, 16], [8, 8, 8]) == [16, 16, 16]
    assert whole_window([17, 5], [16, 1]) == [32, 5]
    assert whole_window((1, 9, 31), (4, 4, 32)) == [4, 12, 32]


def test_memory_budget() -> None:
    total = psutil.virtual_memory().total
    for auto in ("auto", None):
        assert 0 < memory_budget(auto) < total
    assert memory_budget(2) == 2 * 1024**3
    assert memory_budget(0.5) == 512 * 1024**2
    assert memory_budget("1.5") == 1.5 * 1024**3  # as a command line passes it
