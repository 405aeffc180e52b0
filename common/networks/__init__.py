"""Every network of the repository and the one factory that builds them, ``get_network``.

Layout, as in MIC-DKFZ's dynamic-network-architectures: ``architectures/`` holds the networks,
``building_blocks/`` the blocks, width schedules and input checks they are assembled from, and this module the
factory and ``count_parameters``. Bundle configs build networks with::

    "network_def": {"_target_": "common.networks.get_network", "arch": "@arch", "spatial_dims": 3,
                    "in_channels": 1, "out_channels": 2, "init_filters": 32, "depth": 5, "pocket": "@pocket"}

Architectures (``arch``):

* the PocketNet family (Celaya et al., "PocketNet: A Smaller Neural Network for Medical Image Analysis", IEEE
  TMI 2022, and "PocketNet: A Smaller Neural Network for 3D Medical Image Segmentation", MICCAI workshop):
  ``unet``, ``resnet``, ``densenet``, ``hrnet``, ``nnunet`` segmenters and the ``classifier``;
* ``elunet``: ELU-Net, the backbone of the low-resolution study (Ostrowski & Shafique, "Embedded Deployment of
  Semantic Segmentation in Medicine through Low-Resolution Inputs").

Any segmenter can be wrapped in that study's up-scaling head (``head_stages``). Two more networks are settings,
not architectures: the plain U-Net of Ronneberger et al. (the baseline of the complexity table) is
``get_network("unet", 2, 1, K, init_filters=64, depth=4, bias=False)``, and the 3D U-Net of the slab-wise
cascade study (Wehen, "A Comparative Study of U-Net, Patch-wise U-Net, and Patch-wise U-Net Cascade") is
``get_network("unet", 3, C, K, init_filters=32, depth=4)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from common.errors import InvalidInputError
from common.networks.architectures import (
    ELUNet,
    PocketClassifier,
    PocketHRNet,
    PocketUNet,
    UpscaleHead,
    pocket_dynunet,
)
from common.networks.building_blocks import level_widths, make_block

POCKETNET_ARCHS = ("unet", "resnet", "densenet", "hrnet", "nnunet", "classifier")
ARCHS = (*POCKETNET_ARCHS, "elunet")

__all__ = [
    "ARCHS",
    "ELUNet",
    "POCKETNET_ARCHS",
    "PocketClassifier",
    "PocketHRNet",
    "PocketUNet",
    "UpscaleHead",
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
    head_stages: int | None = None,
    stage_skips: bool = False,
    pool_input: bool = False,
    **kwargs,
) -> nn.Module:
    """Build a network; full and pocket differ only in the width schedule.

    Args:
        arch: one of ``ARCHS``.
        spatial_dims: 2 or 3.
        in_channels: image channels. out_channels: classes (logits, no softmax).
        init_filters: width of the first level (32 in the TMI paper, 16 in the short paper/classifier and
            for ELU-Net in the low-resolution study).
        depth: down-sampling steps (5 for a 128^3 patch). HRNet always has 4 streams (``streams=``).
        pocket: constant width at every level.
        double_until: stop doubling after this level (the depth ablation); ``None`` = full.
        style: ``tmi`` (BatchNorm, PReLU ResNet/DenseNet) or ``short`` (no norm, ReLU, parameter-free
            residual); ignored by ``nnunet`` (always InstanceNorm + LeakyReLU).
        scale: down-sampling factor per step, e.g. ``(1, 2, 2)`` for 5-slice slabs (``unet``, ``resnet``,
            ``densenet``, ``nnunet``; the others always halve).
        norm: override the style's normalisation (``batch``, ``instance``).
        head_stages: wrap the segmenter in the up-scaling head with this many x2 stages
            (``common.networks.architectures.upscale_head``): the network then returns every scale, lowest
            resolution first, in training mode and only the highest in eval mode. ``None`` (default): no head;
            ``0``: a head without stages (the segmenter's logits, as a one-element list in training mode).
        stage_skips: the head's skip connections between stages (paper Fig. 4); needs ``head_stages``.
        pool_input: the head average-pools the input by ``2**head_stages`` before the segmenter, so that the
            network maps an image to logits on the same grid while the segmenter works on a coarser one (the 3D
            CPU training recipe); needs ``head_stages``.
        kwargs: ``nnunet``: ``max_filters`` (320), ``res_block``, ``deep_supervision``, ``deep_supr_num``;
            ``hrnet``: ``streams`` (4); ``unet``/``resnet``/``densenet``: ``downsample`` (``pool``/``conv``) and
            ``bias`` (of the 3x3 convolutions, default ``True``).
    """
    if arch not in ARCHS:
        raise InvalidInputError(f"Unknown arch {arch!r}; valid archs: {', '.join(ARCHS)}.")
    if spatial_dims not in (2, 3):
        raise InvalidInputError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    if head_stages is None and stage_skips:
        raise InvalidInputError("stage_skips=True needs the up-scaling head: give head_stages.")
    if head_stages is None and pool_input:
        raise InvalidInputError("pool_input=True needs the up-scaling head: give head_stages.")
    if head_stages is not None and arch == "classifier":
        raise InvalidInputError("The up-scaling head needs a segmenter; the classifier returns one logit per class.")
    net = _backbone(arch, spatial_dims, in_channels, out_channels, init_filters, depth, pocket, double_until, style,
                    scale, norm, **kwargs)
    if head_stages is None:
        return net
    return UpscaleHead(net, out_channels, head_stages, spatial_dims=spatial_dims, stage_skips=stage_skips,
                       pool_input=pool_input)


def _backbone(
    arch: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    init_filters: int,
    depth: int,
    pocket: bool,
    double_until: int | None,
    style: str,
    scale: int | Sequence[int],
    norm: str | None,
    **kwargs,
) -> nn.Module:
    """The network of ``arch`` without a head (arguments as in ``get_network``)."""
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
    if arch == "elunet":
        return ELUNet(spatial_dims, in_channels, out_channels, widths, style, norm, **kwargs)
    return PocketUNet(spatial_dims, in_channels, out_channels, widths, arch, style, scale, norm=norm, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (what the papers' tables count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
