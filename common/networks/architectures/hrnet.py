"""HRNet segmenter of the PocketNet paper: parallel resolution streams that exchange features.

Stream ``i`` works at 1/2**i resolution with width ``widths[i]``; every node is a residual block. Each
column adds one lower stream; streams are fused by summation after max-pooling (to a lower stream) or
nearest up-sampling (to a higher stream), with a 1x1 convolution to change the width. The output
concatenates all streams at full resolution. With 4 streams this is the paper's Table I HRNet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import Conv, Pool
from torch import nn

from common.networks.building_blocks import check_divisible, make_block


def _resample(spatial_dims: int, in_channels: int, out_channels: int, steps: int) -> nn.Module:
    """Path from a stream to one ``steps`` levels lower (positive) or higher (negative)."""
    conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=1)
    if steps > 0:  # max-pool, then change the width (the paper's order)
        return nn.Sequential(Pool[Pool.MAX, spatial_dims](kernel_size=2**steps), conv)
    # 1x1 conv commutes with nearest up-sampling: convolve at low resolution, which is cheaper
    return nn.Sequential(conv, nn.Upsample(scale_factor=2 ** (-steps), mode="nearest"))


class Fusion(nn.Module):
    """Sum every input stream into each output stream (identity on the diagonal)."""

    def __init__(self, spatial_dims: int, widths: Sequence[int], n_in: int, n_out: int):
        super().__init__()
        self.paths = nn.ModuleList()
        for j in range(n_out):
            row = nn.ModuleList()
            for i in range(n_in):
                if i == j:
                    row.append(nn.Identity())
                else:
                    row.append(_resample(spatial_dims, widths[i], widths[j], j - i))
            self.paths.append(row)

    def forward(self, streams: list[torch.Tensor]) -> list[torch.Tensor]:
        outs: list[torch.Tensor] = []
        for row in self.paths:
            parts: list[torch.Tensor] = []
            i = 0
            for path in row:
                parts.append(path(streams[i]))
                i += 1
            total = parts[0]
            for p in parts[1:]:
                total = total + p
            outs.append(total)
        return outs


class Column(nn.Module):
    """One HRNet column: fuse the existing streams into one more stream, then a block on each."""

    def __init__(self, spatial_dims: int, widths: Sequence[int], n_in: int, block: str, style: str,
                 norm: str | None):
        super().__init__()
        self.fusion = Fusion(spatial_dims, widths, n_in, n_in + 1)
        self.blocks = nn.ModuleList(
            [make_block(block, spatial_dims, widths[j], widths[j], style, norm) for j in range(n_in + 1)]
        )

    def forward(self, streams: list[torch.Tensor]) -> list[torch.Tensor]:
        fused = self.fusion(streams)
        outs: list[torch.Tensor] = []
        j = 0
        for blk in self.blocks:
            outs.append(blk(fused[j]))
            j += 1
        return outs


class PocketHRNet(nn.Module):
    """HRNet with ``len(widths)`` streams (4 in the paper); ``widths`` from ``level_widths``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        widths: Sequence[int],
        block: str = "resnet",
        style: str = "tmi",
        norm: str | None = None,
    ):
        super().__init__()
        n = len(widths)
        if n < 2:
            raise ValueError(f"HRNet needs at least two streams, got widths {list(widths)}.")
        self.multiple = [2 ** (n - 1)] * spatial_dims
        blk = make_block
        self.stem = blk(block, spatial_dims, in_channels, widths[0], style, norm)
        # second column: the top stream goes on, the second is born from the pooled top stream
        self.top2 = blk(block, spatial_dims, widths[0], widths[0], style, norm)
        self.pool2 = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        self.second2 = blk(block, spatial_dims, widths[0], widths[1], style, norm)
        self.columns = nn.ModuleList(
            [Column(spatial_dims, widths, k, block, style, norm) for k in range(2, n)]
        )
        self.to_top = nn.ModuleList(
            [nn.Identity()] + [_resample(spatial_dims, widths[i], widths[0], -i) for i in range(1, n)]
        )
        self.merge = blk(block, spatial_dims, n * widths[0], widths[0], style, norm)
        self.head = Conv[Conv.CONV, spatial_dims](widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x.shape[2:], self.multiple)
        x = self.stem(x)
        streams = [self.top2(x), self.second2(self.pool2(x))]
        for column in self.columns:
            streams = column(streams)
        tops: list[torch.Tensor] = []
        i = 0
        for path in self.to_top:
            tops.append(path(streams[i]))
            i += 1
        return self.head(self.merge(torch.cat(tops, dim=1)))
