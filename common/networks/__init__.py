"""The PocketNet network family and its factory, ``get_network``.

Bundle configs build networks with::

    "network_def": {"_target_": "common.networks.get_network", "arch": "@arch", "spatial_dims": 3,
                    "in_channels": 1, "out_channels": 2, "init_filters": 32, "depth": 5, "pocket": "@pocket"}
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from common.networks.blocks import make_block
from common.networks.classifier import PocketClassifier
from common.networks.hrnet import PocketHRNet
from common.networks.nnunet import pocket_dynunet
from common.networks.unet import PocketUNet
from common.networks.widths import level_widths

ARCHS = ("unet", "resnet", "densenet", "hrnet", "nnunet", "classifier")

__all__ = [
    "ARCHS",
    "PocketClassifier",
    "PocketHRNet",
    "PocketUNet",
    "count_parameters",
    "get_network",
    "level_widths",
    "make_block",
    "pocket_dynunet",
]


def get_network(
    arch: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    init_filters: int = 32,
    depth: int = 5,
    pocket: bool = False,
    double_until: int | None = None,
    style: str = "tmi",
    scale: int | Sequence[int] = 2,
    norm: str | None = None,
    **kwargs,
) -> nn.Module:
    """Build a network of the family; full and pocket differ only in the width schedule.

    Args:
        arch: one of ``ARCHS``.
        spatial_dims: 2 or 3.
        in_channels: image channels. out_channels: classes (logits, no softmax).
        init_filters: width of the first level (32 in the TMI paper, 16 in the short paper/classifier).
        depth: down-sampling steps (5 for a 128^3 patch). HRNet always has 4 streams (``streams=``).
        pocket: constant width at every level.
        double_until: stop doubling after this level (the depth ablation); ``None`` = full.
        style: ``tmi`` (BatchNorm, PReLU ResNet/DenseNet) or ``short`` (no norm, ReLU, parameter-free
            residual); ignored by ``nnunet`` (always InstanceNorm + LeakyReLU).
        scale: down-sampling factor per step, e.g. ``(1, 2, 2)`` for 5-slice slabs.
        norm: override the style's normalisation (``batch``, ``instance``).
        kwargs: ``nnunet``: ``max_filters`` (320), ``res_block``, ``deep_supervision``, ``deep_supr_num``;
            ``hrnet``: ``streams`` (4); ``unet``/``resnet``/``densenet``: ``downsample`` (``pool``/``conv``).
    """
    if arch not in ARCHS:
        raise ValueError(f"Unknown arch {arch!r}; valid archs: {', '.join(ARCHS)}.")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    if arch == "nnunet":
        max_filters = kwargs.pop("max_filters", 320)
        widths = level_widths(init_filters, depth, pocket, double_until, max_filters)
        return pocket_dynunet(spatial_dims, in_channels, out_channels, widths, scale, **kwargs)
    if arch == "hrnet":
        streams = kwargs.pop("streams", 4)
        widths = level_widths(init_filters, streams - 1, pocket, double_until)
        return PocketHRNet(spatial_dims, in_channels, out_channels, widths, "resnet", style, norm, **kwargs)
    widths = level_widths(init_filters, depth, pocket, double_until)
    if arch == "classifier":
        block = kwargs.pop("block", "unet")
        return PocketClassifier(spatial_dims, in_channels, out_channels, widths, block, style, norm, **kwargs)
    return PocketUNet(spatial_dims, in_channels, out_channels, widths, arch, style, scale, norm=norm, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (what the papers' tables count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
