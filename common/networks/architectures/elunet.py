"""ELU-Net (Deng et al., "ELU-Net: An Efficient and Lightweight U-Net for Medical Image Segmentation", IEEE Access
10:35932, 2022), the backbone of the low-resolution experiments of Ostrowski & Shafique.

ELU-Net is a U-Net whose decoder level ``l`` concatenates, each projected to the level's width ``c_l``:

* the next-deeper decoder output (the bottleneck for the deepest level), up-sampled x2;
* the same-level encoder features (3x3 conv);
* every *deeper* encoder level ``j = l+1 .. depth-1`` (not the bottleneck), up-sampled ``x2^(j-l)``.

Shallower encoder levels are never used (unlike U-Net 3+). Every path is an ``UpPath``: ``log2(k)``
transposed convolutions (kernel 2, stride 2, channel count kept) followed by one 3x3 convolution to ``c_l``;
that reading of the paper's "up-sampling(k) + 3x3 Conv" is the one that reproduces the GMac figures of
Ostrowski & Shafique (29.98 GMac at 320x320 with n=16 under the ptflops <= 0.7.4 counting rule, see
``common.benchmarks.complexity``). Every node is the U-Net block (``conv 3 -> norm -> ReLU``, twice).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers import Conv, Pool

from common.networks.building_blocks import UpPath, check_divisible, make_block

__all__ = ["ELUNet"]


class ELUNet(nn.Module):
    """ELU-Net with one level per entry of ``widths`` (``n, 2n, 4n, ..., 2^depth n`` in the paper).

    With ``widths = level_widths(16, 4)`` (the width used by the low-resolution paper; the FrexG code
    suggests 8) and 1 input channel, the network has 3,377,184 parameters plus ``17 * out_channels`` for the
    1x1 output conv (3,377,201 for 1 class, 3,377,218 for 2), and costs 17.92 true GMac at 320x320. The
    PocketNet widths (``n`` at every level) give 110,290 parameters at n=16 with 2 classes.

    The public implementations (``FrexG/ELU-Net-pytorch``, embedded in ``ErikOstrowski/J-Net``) call three
    up-path modules on two different inputs each (next-deeper decoder output *and* same-depth encoder
    features), so those paths share weights (3.19 M parameters at n=16). We deliberately do not: every path
    has its own module, as the paper's figure draws it. MACs are identical either way.

    Args:
        spatial_dims: number of spatial dimensions (2 as in the paper; 3 also works).
        in_channels: number of input channels.
        out_channels: number of output channels (logits, no softmax).
        widths: feature maps of levels ``0..depth``; ``len(widths) - 1`` max-poolings (4 in ELU-Net), so every
            input side must be a multiple of ``2**depth``.
        style: ``tmi`` (BatchNorm, as ELU-Net) or ``short`` (no normalisation); see ``make_block``.
        norm: override the style's normalisation. Note that instance norm fails for 16x16 inputs (1x1
            bottleneck).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        widths: Sequence[int],
        style: str = "tmi",
        norm: str | None = None,
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths needs at least two levels, got {list(widths)}.")
        depth = len(widths) - 1
        self.depth = depth
        self.multiple = [2**depth] * spatial_dims

        def node(cin: int, cout: int) -> nn.Module:
            return make_block("unet", spatial_dims, cin, cout, style, norm)

        pool = Pool[Pool.MAX, spatial_dims]
        encoder = [node(in_channels, widths[0])]
        encoder += [nn.Sequential(pool(kernel_size=2), node(widths[i], widths[i + 1])) for i in range(depth)]
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
        self.decoder = nn.ModuleList([node(widths[lv] * (depth + 1 - lv), widths[lv]) for lv in levels])
        self.final_conv = Conv[Conv.CONV, spatial_dims](widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x.shape[2:], self.multiple)
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
