"""nnU-Net (full or pocket) as MONAI's DynUNet: the configuration, not a re-implementation.

The paper's nnUNet (a port of NVIDIA's) is DynUNet with plain blocks, InstanceNorm(affine), LeakyReLU(0.01),
bias on the transposed convolutions, widths ``min(32 * 2**i, 320)`` (pocket: 32 everywhere), and
``depth + 1`` levels, the first at full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import DynUNet


def pocket_dynunet(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    widths: Sequence[int],
    scale: int | Sequence[int] = 2,
    res_block: bool = False,
    deep_supervision: bool = False,
    deep_supr_num: int = 1,
) -> DynUNet:
    """DynUNet with one level per entry of ``widths`` and stride ``scale`` between levels."""
    n = len(widths)
    stride = [scale] * spatial_dims if isinstance(scale, int) else list(scale)
    strides = [[1] * spatial_dims] + [stride] * (n - 1)
    return DynUNet(
        spatial_dims,
        in_channels,
        out_channels,
        kernel_size=[3] * n,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=list(widths),
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
        deep_supervision=deep_supervision,
        deep_supr_num=deep_supr_num,
        res_block=res_block,
        trans_bias=True,
    )
