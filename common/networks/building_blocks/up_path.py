"""Learned up-sampling path: ``log2(scale)`` transposed convolutions, then one 3x3 convolution.

ELU-Net (Deng et al., "ELU-Net: An Efficient and Lightweight U-Net for Medical Image Segmentation", IEEE
Access 2022) joins every decoder level with such paths, and every stage of the up-scaling head (Ostrowski &
Shafique, "Embedded Deployment of Semantic Segmentation in Medicine through Low-Resolution Inputs") is one
with ``scale=2``.
"""

from __future__ import annotations

import math

import torch
from monai.networks.layers import Conv
from torch import nn

__all__ = ["UpPath"]


class UpPath(nn.Module):
    """``log2(scale)`` x ConvTranspose(k=2, s=2, channels kept), then one 3x3 conv to ``out_channels``.

    ``scale=1`` leaves only the 3x3 conv (ELU-Net's same-scale path). The transposed convolutions keep
    ``in_channels`` so that the channel reduction happens once, in the final 3x3 conv, as in ELU-Net; there is
    no normalisation or activation inside the path. With ``scale=2`` and ``in_channels == out_channels == Nc``
    in 2D it has ``(4 Nc + 1) Nc + (9 Nc + 1) Nc = 13 Nc^2 + 2 Nc`` parameters.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: int) -> None:
        super().__init__()
        steps = int(round(math.log2(scale))) if scale >= 1 else 0
        if scale < 1 or 2**steps != scale:
            raise ValueError(f"scale must be a power of two >= 1, got {scale}.")
        conv_t = Conv[Conv.CONVTRANS, spatial_dims]
        self.up = nn.Sequential(*[conv_t(in_channels, in_channels, kernel_size=2, stride=2) for _ in range(steps)])
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))
