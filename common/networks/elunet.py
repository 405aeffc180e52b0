"""ELU-Net (Deng et al., IEEE Access 10:35932, 2022), the backbone of the low-resolution J-Net experiments.

ELU-Net is a U-Net whose decoder level ``l`` concatenates, each projected to the level's width ``c_l``:

* the next-deeper decoder output (the bottleneck for the deepest level), up-sampled x2;
* the same-level encoder features (3x3 conv);
* every *deeper* encoder level ``j = l+1 .. depth-1`` (not the bottleneck), up-sampled ``x2^(j-l)``.

Shallower encoder levels are never used (unlike U-Net 3+). Every up-sampling path is ``log2(k)`` transposed
convolutions (kernel 2, stride 2, channel count kept) followed by one 3x3 convolution to ``c_l``; that reading
of the paper's "up-sampling(k) + 3x3 Conv" is the one that reproduces the GMac figures of Ostrowski & Shafique
(29.98 GMac at 320x320 with n=16 under the ptflops <= 0.7.4 counting rule, see ``common.benchmarks.complexity``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Pool

__all__ = ["DoubleConv", "DownBlock", "UpPath", "ELUNet"]


class DoubleConv(nn.Sequential):
    """``[conv 3 (padding 1) -> norm -> act] x 2``: the node used by every encoder and decoder level."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.add_module(
            "conv_0",
            Convolution(spatial_dims, in_channels, out_channels, act=act, norm=norm, bias=bias, padding=1),
        )
        self.add_module(
            "conv_1",
            Convolution(spatial_dims, out_channels, out_channels, act=act, norm=norm, bias=bias, padding=1),
        )


class DownBlock(nn.Sequential):
    """Max-pool by 2, then a :class:`DoubleConv`: one encoder level below full resolution."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.add_module("pool", Pool[Pool.MAX, spatial_dims](kernel_size=2))
        self.add_module("convs", DoubleConv(spatial_dims, in_channels, out_channels, act, norm, bias))


class UpPath(nn.Module):
    """``log2(scale)`` x ConvTranspose(k=2, s=2, channels kept), then one 3x3 conv to ``out_channels``.

    ``scale=1`` leaves only the 3x3 conv (ELU-Net's same-scale path). The transposed convolutions keep
    ``in_channels`` so that the channel reduction happens once, in the final 3x3 conv, as in ELU-Net; there is
    no normalisation or activation inside the path (the decoder's :class:`DoubleConv` follows the concat).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: int) -> None:
        super().__init__()
        steps = int(round(math.log2(scale)))
        if scale < 1 or 2**steps != scale:
            raise ValueError(f"scale must be a power of two >= 1, got {scale}.")
        conv_t = Conv[Conv.CONVTRANS, spatial_dims]
        self.up = nn.Sequential(*[conv_t(in_channels, in_channels, kernel_size=2, stride=2) for _ in range(steps)])
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class ELUNet(nn.Module):
    """ELU-Net with encoder widths ``n, 2n, 4n, ..., 2^depth n`` and ``depth`` poolings.

    With ``features=16`` (the width used by the low-resolution paper; the FrexG code suggests 8) and 1 input
    channel, the network has 3,377,184 parameters plus ``17 * out_channels`` for the 1x1 output conv
    (3,377,201 for 1 class, 3,377,218 for 2), and costs 17.92 true GMac at 320x320.

    The public implementations (``FrexG/ELU-Net-pytorch``, embedded in ``ErikOstrowski/J-Net``) call three
    up-path modules on two different inputs each (next-deeper decoder output *and* same-depth encoder
    features), so those paths share weights (3.19 M parameters at n=16). We deliberately do not: every path
    has its own module, as the paper's figure draws it. MACs are identical either way.

    Args:
        spatial_dims: number of spatial dimensions (2 as in the paper; 3 also works).
        in_channels: number of input channels.
        out_channels: number of output channels (logits, no softmax).
        features: width ``n`` of the full-resolution level.
        depth: number of poolings (4 in ELU-Net); the input side must be divisible by ``2**depth``.
        act: activation of the double-conv nodes.
        norm: normalisation of the double-conv nodes. Batch norm as in ELU-Net; note that instance norm
            fails for 16x16 inputs (1x1 bottleneck).
        bias: whether the double-conv convolutions have a bias (ELU-Net: yes).
        pocket: PocketNet width schedule, ``n`` feature maps at every level instead of doubling (same
            topology; 110,290 parameters instead of 3,377,218 at n=16 with 2 classes). Default off (ELU-Net).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: int = 16,
        depth: int = 4,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        bias: bool = True,
        pocket: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}.")
        widths = [features * (1 if pocket else 2**i) for i in range(depth + 1)]
        self.depth = depth

        encoder = [DoubleConv(spatial_dims, in_channels, widths[0], act, norm, bias)]
        encoder += [DownBlock(spatial_dims, widths[i], widths[i + 1], act, norm, bias) for i in range(depth)]
        self.encoder = nn.ModuleList(encoder)

        # decoder modules are stored deepest level first, i.e. in execution order
        levels = list(range(depth - 1, -1, -1))
        self.from_below = nn.ModuleList([UpPath(spatial_dims, widths[lv + 1], widths[lv], 2) for lv in levels])
        self.same_scale = nn.ModuleList([UpPath(spatial_dims, widths[lv], widths[lv], 1) for lv in levels])
        # deep[k][m]: from encoder level j = lv + 1 + m (bottleneck excluded) to decoder level lv = levels[k]
        self.deep = nn.ModuleList(
            [
                nn.ModuleList(
                    [UpPath(spatial_dims, widths[j], widths[lv], 2 ** (j - lv)) for j in range(lv + 1, depth)]
                )
                for lv in levels
            ]
        )
        self.decoder = nn.ModuleList(
            [DoubleConv(spatial_dims, widths[lv] * (depth + 1 - lv), widths[lv], act, norm, bias) for lv in levels]
        )
        self.final_conv = Conv[Conv.CONV, spatial_dims](widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        d = skips[self.depth]
        for k, (below, same, deep, node) in enumerate(zip(self.from_below, self.same_scale, self.deep, self.decoder)):
            level = self.depth - 1 - k
            feats: list[torch.Tensor] = [below(d), same(skips[level])]
            for m, path in enumerate(deep):
                feats.append(path(skips[level + 1 + m]))
            d = node(torch.cat(feats, dim=1))
        return self.final_conv(d)
