"""Slice-wise low-resolution segmentation for the prostate bundle: sizes, network, slice inferer.

Why a module: the bundle trains a 2D network on axial slices of 3D volumes at a *low* input resolution
(16..320 pixels a side), optionally with the up-scaling head of Ostrowski & Shafique, yet it must be scored
and must write its masks on the *original* slice grid of every volume. The pieces below keep the training
transforms, the validation/evaluation inferer and the inference inferer on one resizing rule:

* image slice -> ``input_size`` x ``input_size``: MONAI ``Resize(mode="bilinear", anti_aliasing=True)``
  (Gaussian pre-smoothing when shrinking, plain bilinear when enlarging);
* ground truth -> the network's output size: nearest neighbour (``nearest-exact``);
* network output -> original slice grid: softmax, then **bilinear on the probabilities**, then argmax.

Sizes (the paper's choice): the ground truth is the largest ``input_size * 2**k`` that fits in the
``image_size`` slices are resized to, i.e. 320 for inputs 320/160/80 and 256 for 32/16 (320/32 is not a power
of two); the head has ``k`` x2 stages so that its output reaches that size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import SliceInferer
from monai.transforms import Resize

from common.errors import InvalidInputError

__all__ = ["gt_side", "head_stages", "highest_scale", "input_resizer", "LowResSliceInferer"]


def gt_side(image_size: int, input_size: int) -> int:
    """Side of the ground truth the head is trained against: largest ``input_size * 2**k <= image_size``.

    ``gt_side(320, s)`` is 320 for s = 320, 160, 80 and 256 for s = 32, 16, as in the paper. An input larger
    than ``image_size`` keeps its own size (no head stage).
    """
    if input_size < 1 or image_size < 1:
        raise InvalidInputError(f"sizes must be positive, got image_size={image_size}, input_size={input_size}.")
    stages = max(0, int(math.floor(math.log2(image_size / input_size) + 1e-9)))
    return int(input_size * 2**stages)


def head_stages(image_size: int, input_size: int, head: bool = True) -> int:
    """Number of x2 head stages from ``input_size`` to :func:`gt_side` (0 without head)."""
    return int(round(math.log2(gt_side(image_size, input_size) / input_size))) if head else 0


def highest_scale(pred: Any) -> Any:
    """The highest-resolution output of a head's list of scales; anything else unchanged (train metric)."""
    return pred[-1] if isinstance(pred, (list, tuple)) else pred


def input_resizer(input_size: int | Sequence[int], mode: str = "bilinear", anti_aliasing: bool = True) -> Resize:
    """The image resize of inference; the training config's ``Resized`` uses the same three settings.

    ``anti_aliasing`` pre-smooths with a Gaussian only when shrinking; turn it off together with
    ``mode="nearest"`` to mimic the J-Net code (OpenCV ``INTER_NEAREST``).
    """
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    return Resize(spatial_size=size, mode=mode, anti_aliasing=anti_aliasing)


def _plain(x: Any) -> torch.Tensor:
    """Drop MONAI metadata inside the inferer (the merged output gets the volume's metadata back)."""
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


class LowResSliceInferer(SliceInferer):
    """MONAI ``SliceInferer`` over whole slices that feeds the network a low-resolution copy of each slice
    and returns **probabilities on the original slice grid** (same spatial shape as the input volume).

    Per batch of slices: resize to ``input_size`` (:func:`input_resizer`), run the network (a list of scales is
    reduced to its highest), softmax over channels, resize bilinearly back to the slice's own size. Post-
    processing therefore needs only ``argmax`` (no activation).

    Args:
        input_size: side of the square network input.
        spatial_dim: axis of the volume that indexes the slices (2: the third array axis, MSD's axial one).
        sw_batch_size: slices per network call.
        input_interp: interpolation of the image resize (``bilinear`` default; ``nearest`` as the J-Net code).
        anti_aliasing: Gaussian pre-smoothing when shrinking.
        output_interp: interpolation of the probabilities back to the slice grid.
        kwargs: passed to ``SlidingWindowInferer`` (e.g. ``device``, ``sw_device``, ``progress``).
    """

    def __init__(
        self,
        input_size: int,
        spatial_dim: int = 2,
        sw_batch_size: int = 16,
        input_interp: str = "bilinear",
        anti_aliasing: bool = True,
        output_interp: str = "bilinear",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("overlap", 0.0)
        super().__init__(spatial_dim, roi_size=(-1, -1), sw_batch_size=sw_batch_size, **kwargs)
        self.input_size = int(input_size)
        self.resize_input = input_resizer(self.input_size, input_interp, anti_aliasing)
        self.output_interp = output_interp

    def network_wrapper(
        self,
        network: Callable[..., Any],
        x: torch.Tensor,
        condition: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        x = x.squeeze(dim=self.spatial_dim + 2)  # (N, C, H, W): one batch of whole slices
        n, c, h, w = x.shape
        # MONAI's Resize works on one channel-first image: fold the slices into channels, as the training
        # transform sees each slice, so that both resize identically
        low = self.resize_input(_plain(x).reshape(n * c, h, w), lazy=False)
        low = _plain(low).reshape(n, c, self.input_size, self.input_size)
        out = highest_scale(network(low, *args, **kwargs))
        probs = torch.softmax(out.float(), dim=1)
        align = None if self.output_interp in ("nearest", "nearest-exact", "area") else False
        probs = F.interpolate(probs, size=(h, w), mode=self.output_interp, align_corners=align)
        return probs.unsqueeze(dim=self.spatial_dim + 2)
