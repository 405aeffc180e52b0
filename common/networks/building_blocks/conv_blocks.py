"""The per-level convolution blocks (U-Net, ResNet, DenseNet) of every segmenter, in the two PocketNet styles.

Celaya et al., "PocketNet: A Smaller Neural Network for Medical Image Analysis" (IEEE TMI 2022, the long
paper) and "PocketNet: A Smaller Neural Network for 3D Medical Image Segmentation" (MICCAI workshop, the
short paper).

``style="tmi"`` is the long paper: conv-BatchNorm-activation, ReLU for U-Net, PReLU (one slope per channel)
for ResNet and DenseNet, and a 1x1 projection on the residual path. The U-Net block in this style is also
ELU-Net's node and, with ``bias=False``, the node of the plain U-Net of Ronneberger et al.
``style="short"`` is the short paper: no normalisation, ReLU after every convolution, and a parameter-free
residual ``y1 + conv(y1)``.
Parameter counts of both styles reproduce the papers' tables (see tests/networks/test_networks.py).
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers import Conv
from torch import nn

STYLES = ("tmi", "short")
BLOCKS = ("unet", "resnet", "densenet")


def conv_norm_act(
    spatial_dims: int, in_channels: int, out_channels: int, style: str, act: str, norm: str | None = None,
    bias: bool = True,
) -> Convolution:
    """3x3(x3) convolution (with bias unless ``bias=False``), then the style's normalisation and activation."""
    if norm is None:
        norm = "batch" if style == "tmi" else None
    act_def = ("prelu", {"num_parameters": out_channels}) if act == "prelu" else act
    return Convolution(
        spatial_dims, in_channels, out_channels, kernel_size=3, act=act_def, norm=norm, bias=bias
    )


class PlainBlock(nn.Sequential):
    """U-Net block: two convolutions."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, style: str = "tmi",
                 norm: str | None = None, bias: bool = True):
        super().__init__(
            conv_norm_act(spatial_dims, in_channels, out_channels, style, "relu", norm, bias),
            conv_norm_act(spatial_dims, out_channels, out_channels, style, "relu", norm, bias),
        )


class ProjectedResidualBlock(nn.Module):
    """TMI ResNet block: ``PReLU(body(x) + conv1x1(x))`` with a two-convolution body."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str | None = None,
                 bias: bool = True):
        super().__init__()
        self.body = nn.Sequential(
            conv_norm_act(spatial_dims, in_channels, out_channels, "tmi", "prelu", norm, bias),
            conv_norm_act(spatial_dims, out_channels, out_channels, "tmi", "prelu", norm, bias),
        )
        self.projection = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=1)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.projection(x))


class ChainedResidualBlock(nn.Module):
    """Short-paper ResNet block: ``y1 = conv(x); y1 + conv(y1)``; adds no parameters to a U-Net block."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str | None = None,
                 bias: bool = True):
        super().__init__()
        self.conv1 = conv_norm_act(spatial_dims, in_channels, out_channels, "short", "relu", norm, bias)
        self.conv2 = conv_norm_act(spatial_dims, out_channels, out_channels, "short", "relu", norm, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        return y + self.conv2(y)


class DenseBlock(nn.Module):
    """Two densely connected convolutions, then a 1x1 transition back to ``out_channels``."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, style: str = "tmi",
                 norm: str | None = None, bias: bool = True):
        super().__init__()
        act = "prelu" if style == "tmi" else "relu"
        self.conv1 = conv_norm_act(spatial_dims, in_channels, out_channels, style, act, norm, bias)
        self.conv2 = conv_norm_act(spatial_dims, in_channels + out_channels, out_channels, style, act, norm, bias)
        self.transition = Conv[Conv.CONV, spatial_dims](in_channels + 2 * out_channels, out_channels, 1)
        self.act = nn.PReLU(out_channels) if style == "tmi" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, self.conv1(x)], dim=1)
        x = torch.cat([x, self.conv2(x)], dim=1)
        return self.act(self.transition(x))


def make_block(
    block: str, spatial_dims: int, in_channels: int, out_channels: int, style: str = "tmi",
    norm: str | None = None, bias: bool = True,
) -> nn.Module:
    """The block named ``block`` (unet, resnet, densenet) in the given style; ``bias`` of its 3x3 convolutions."""
    if style not in STYLES:
        raise ValueError(f"Unknown style {style!r}; valid styles: {', '.join(STYLES)}.")
    if block == "unet":
        return PlainBlock(spatial_dims, in_channels, out_channels, style, norm, bias)
    if block == "resnet":
        if style == "tmi":
            return ProjectedResidualBlock(spatial_dims, in_channels, out_channels, norm, bias)
        return ChainedResidualBlock(spatial_dims, in_channels, out_channels, norm, bias)
    if block == "densenet":
        return DenseBlock(spatial_dims, in_channels, out_channels, style, norm, bias)
    raise ValueError(f"Unknown block {block!r}; valid blocks: {', '.join(BLOCKS)}.")
