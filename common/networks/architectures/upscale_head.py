"""Up-scaling head (Ostrowski & Shafique, "Embedded Deployment of Semantic Segmentation in Medicine through
Low-Resolution Inputs", the J-Net head): low-resolution input, high-resolution output.

The head wraps any segmentation backbone that maps an image to ``num_classes`` logit channels and doubles the
logits' resolution ``stages`` times, so that a network fed a down-sized image can be trained against the
full-resolution ground truth (with :class:`common.losses.multiscale.MultiScaleLoss` on every scale). Because the
stages work on ``num_classes`` channels only, they are almost free: 13 Nc^2 + 2 Nc parameters per 2D stage.
``common.networks.get_network(..., head_stages=K)`` wraps any of its segmenters in this head.

``pool_input=True`` makes the head take the image at its *output* resolution and average-pool it by ``2**stages``
itself before the backbone (the 3D CPU training recipe): the whole pipeline around the network (cropping, sliding
windows, whole-volume inference, exported engines) then stays on the label's grid, while the backbone does the
work of a ``2**stages`` times coarser grid (1/8 of the voxels per x2 stage in 3D). Average pooling is the
area-weighted down-sizing, i.e. anti-aliased as the prostate bundle's ``Resized(anti_aliasing=True)`` is.

Each x2 stage is an ``UpPath(scale=2)``: ConvTranspose (kernel 2, stride 2, ``in_channels`` kept) -> conv 3
(padding 1), no normalisation and no activation, as in the paper and its code.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from common.networks.building_blocks import UpPath
from common.networks.building_blocks.shapes import check_divisible

__all__ = ["UpscaleHead"]


class UpscaleHead(nn.Module):
    """Wrap ``backbone`` and append ``stages`` x2 up-scaling stages to its logits.

    Output order: scale ``i`` is the output after ``i`` stages, i.e. ``[backbone logits (input resolution),
    x2, x4, ..., x2^stages]`` -- **lowest resolution first, highest last**. A 16x16 input through 4 stages gives
    16, 32, 64, 128 and 256. Every scale holds logits (no softmax), so each can be fed to the base loss.

    What ``forward`` returns:

    * in training mode, or when ``return_all_scales`` is True: the list of all ``stages + 1`` scales;
    * in eval mode with ``return_all_scales=False`` (the default): only the highest-resolution tensor, which
      is what MONAI inferers, post-transforms and metrics expect.

    ``forward_all_scales`` always returns the list (also exported for TorchScript).

    There is **no activation between stages**, following the paper (Eq. for #Params, "simple transposed
    layers") and its public code. Consequently the head is a learned *linear* up-sampler of the backbone's
    logits (plus biases); all non-linearity stays in the backbone. That is what keeps it at tens of
    parameters, and it cannot hurt the low-resolution prediction, which is still supervised directly.

    ``stage_skips=True`` adds the skip connections of the paper's Fig. 4, between up-scaling stages only
    (skips from the backbone's encoder were tried by the authors and dropped as too expensive). The skips
    carry the backbone's output ``y_0`` forward: for every stage ``i >= 2`` (the first stage's input already is
    ``y_0`` and the paper leaves the second stage without a skip), ``y_0`` is stretched to the stage's input
    resolution by ``i`` transposed convolutions followed by one 3x3 conv, concatenated with ``y_i``, and the
    stage becomes ConvTranspose(2 Nc -> 2 Nc) -> conv 3 (2 Nc -> Nc). This is the topology of the public
    ``JNet_16.py``, but without its weight sharing (it reuses one 3x3 conv after every stretching ConvT and one
    fused stage for both skip stages: 112 parameters for Nc=1, 4 stages). Ours has separate modules: 149
    parameters for Nc=1, 4 stages; the paper states 159, but its own itemised sum does not add up to 159 and
    its Fig. 4 cannot be matched exactly. Per 2D skip stage ``i``: ``i (4 Nc^2 + Nc) + 43 Nc^2 + 4 Nc``.

    Args:
        backbone: any network mapping the image to ``num_classes`` channels of logits. It must return a
            single tensor (TorchScript scripting of the head also requires a scriptable backbone).
        num_classes: number of channels of the backbone's output (``N_c``).
        stages: number of x2 up-scaling stages ``K`` (0 gives the backbone alone).
        spatial_dims: number of spatial dimensions.
        stage_skips: add the Fig. 4 skip connections (only affects stages ``i >= 2``).
        return_all_scales: in eval mode, return all scales instead of only the highest resolution.
        pool_input: average-pool the input by ``2**stages`` before the backbone, so that the highest output
            scale has the input's resolution (the input's size must be divisible by ``2**stages`` times the
            backbone's own divisor).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        stages: int,
        spatial_dims: int = 2,
        stage_skips: bool = False,
        return_all_scales: bool = False,
        pool_input: bool = False,
    ) -> None:
        super().__init__()
        if stages < 0:
            raise ValueError(f"stages must be >= 0, got {stages}.")
        self.backbone = backbone
        self.stages = stages
        self.stage_skips = stage_skips
        self.return_all_scales = return_all_scales
        self.pool_input = pool_input
        pool = (nn.AvgPool2d, nn.AvgPool3d)[spatial_dims - 2] if spatial_dims in (2, 3) else None
        self.input_pool = pool(2**stages) if (pool_input and stages > 0 and pool is not None) else nn.Identity()
        # what an input's size must be a multiple of (read by whole-volume inference and the engines)
        inner = getattr(backbone, "multiple", None)
        self.multiple = (
            [int(m) * (2**stages if pool_input else 1) for m in inner] if inner is not None else [1] * spatial_dims
        )
        n_plain = min(stages, 2) if stage_skips else stages
        self.plain_stages = nn.ModuleList(
            [UpPath(spatial_dims, num_classes, num_classes, 2) for _ in range(n_plain)]
        )
        skip_ids = range(n_plain, stages)
        # stretch[m] brings y_0 to the input resolution of stage i = n_plain + m (i.e. x2^i)
        self.stretch = nn.ModuleList([UpPath(spatial_dims, num_classes, num_classes, 2**i) for i in skip_ids])
        self.skip_stages = nn.ModuleList([UpPath(spatial_dims, 2 * num_classes, num_classes, 2) for _ in skip_ids])

    @torch.jit.export
    def forward_all_scales(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All scales, lowest resolution (backbone output) first, highest last."""
        if self.pool_input:
            check_divisible(list(x.shape[2:]), self.multiple)
        y0 = self.backbone(self.input_pool(x))
        outs: list[torch.Tensor] = [y0]
        for stage in self.plain_stages:
            outs.append(stage(outs[-1]))
        for stretch, stage in zip(self.stretch, self.skip_stages):
            outs.append(stage(torch.cat([stretch(y0), outs[-1]], dim=1)))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        outs = self.forward_all_scales(x)
        if self.training or self.return_all_scales:
            return outs
        return outs[-1]
