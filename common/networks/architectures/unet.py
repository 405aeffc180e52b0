"""One encoder-decoder for the U-Net, ResNet and DenseNet segmenters, parameterised by its widths.

Like nnU-Net's generic U-Net: the architecture is the list of level widths, the block type and the
down-sampling factor; full, pocket and the depth ablation differ only in ``widths``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import Conv, Pool
from torch import nn

from common.networks.building_blocks import check_divisible, make_block


class PocketUNet(nn.Module):
    """U-shaped segmenter: block + down-sampling per level, transposed-conv up-sampling, concatenated skips.

    Args:
        spatial_dims: 2 or 3.
        in_channels / out_channels: image channels and number of classes (logits are returned).
        widths: feature maps of levels ``0..depth``; ``len(widths) - 1`` down-sampling steps.
        block: ``unet``, ``resnet`` or ``densenet`` (see ``blocks.py``).
        style: ``tmi`` (long paper, BatchNorm) or ``short`` (workshop paper, no normalisation).
        scale: down/up-sampling factor per step; ``(1, 2, 2)`` keeps the slices of a 5-slice slab.
        downsample: ``pool`` (max-pool) or ``conv`` (strided conv with bias, no norm); ``None`` picks the
            papers' choice: ``conv`` for the TMI DenseNet, ``pool`` otherwise.
        norm: override the style's normalisation (e.g. ``instance``).
        bias: bias of the blocks' 3x3 convolutions. ``False`` with the ``tmi`` style and ``unet`` blocks is the
            plain U-Net of Ronneberger et al. (conv-BN-ReLU twice per level, the baseline of Ostrowski &
            Shafique's complexity table).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        widths: Sequence[int],
        block: str = "unet",
        style: str = "tmi",
        scale: int | Sequence[int] = 2,
        downsample: str | None = None,
        norm: str | None = None,
        bias: bool = True,
    ):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths needs at least two levels, got {list(widths)}.")
        scale_t = (scale,) * spatial_dims if isinstance(scale, int) else tuple(scale)
        if len(scale_t) != spatial_dims:
            raise ValueError(f"scale {scale} does not have {spatial_dims} entries.")
        if downsample is None:
            downsample = "conv" if block == "densenet" and style == "tmi" else "pool"
        if downsample not in ("pool", "conv"):
            raise ValueError(f"downsample must be 'pool' or 'conv', got {downsample!r}.")
        depth = len(widths) - 1
        self.multiple = [s**depth for s in scale_t]
        conv_t = Conv[Conv.CONVTRANS, spatial_dims]

        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        channels = in_channels
        for w in widths[:-1]:
            self.encoders.append(make_block(block, spatial_dims, channels, w, style, norm, bias))
            if downsample == "conv":
                self.downs.append(Conv[Conv.CONV, spatial_dims](w, w, kernel_size=scale_t, stride=scale_t))
            else:
                self.downs.append(Pool[Pool.MAX, spatial_dims](kernel_size=scale_t, stride=scale_t))
            channels = w
        self.bottleneck = make_block(block, spatial_dims, channels, widths[-1], style, norm, bias)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        channels = widths[-1]
        for w in reversed(widths[:-1]):
            self.ups.append(conv_t(channels, w, kernel_size=scale_t, stride=scale_t))
            self.decoders.append(make_block(block, spatial_dims, 2 * w, w, style, norm, bias))
            channels = w
        self.head = Conv[Conv.CONV, spatial_dims](channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x.shape[2:], self.multiple)
        skips: list[torch.Tensor] = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        level = len(skips) - 1
        for up, decoder in zip(self.ups, self.decoders):
            x = decoder(torch.cat([up(x), skips[level]], dim=1))
            level -= 1
        return self.head(x)
