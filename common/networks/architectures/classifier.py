"""PocketNet classifier (COVIDx, the long PocketNet paper's Table II): U-Net encoder, global max pool, linear."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import Pool
from torch import nn

from common.networks.building_blocks import make_block


class PocketClassifier(nn.Module):
    """Encoder blocks with max-pooling between them, then global max pool and a linear layer (logits).

    Defaults follow the paper's classifier: no normalisation (``style="short"``), ReLU after every conv.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int],
        block: str = "unet",
        style: str = "short",
        norm: str | None = None,
    ):
        super().__init__()
        self.blocks = nn.ModuleList()
        channels = in_channels
        for w in widths:
            self.blocks.append(make_block(block, spatial_dims, channels, w, style, norm))
            channels = w
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.blocks) - 1
        i = 0
        for blk in self.blocks:
            x = blk(x)
            if i < last:
                x = self.pool(x)
            i += 1
        return self.fc(torch.amax(x, dim=list(range(2, x.dim()))))
