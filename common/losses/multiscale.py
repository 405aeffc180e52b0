"""Multi-scale loss L_sum of the low-resolution-input paper (Ostrowski & Shafique): the base loss of every output
scale of :class:`common.networks.UpscaleHead` against the ground truth at that scale, summed with
weight 1."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch.nn.modules.loss import _Loss

__all__ = ["MultiScaleLoss"]


class MultiScaleLoss(DeepSupervisionLoss):
    """``sum_i w_i * loss(outputs[i], resize(target, outputs[i].shape))`` with all ``w_i = 1`` by default.

    A thin subclass of MONAI's ``DeepSupervisionLoss`` with ``weight_mode="same"`` (its default ``"exp"``
    halves the weight per level; the paper sums every scale with weight 1). ``outputs`` is the list returned
    by the head in training mode; the order of the scales does not matter. A single tensor is passed straight
    to the base loss.

    How the ground truth is resized: the *full-resolution* ground truth is **downsampled** to every output
    scale, with ``nearest-exact`` interpolation by default (MONAI's choice). For an exact factor-2 reduction it
    picks pixel ``2i + 1`` of every 2x2 block, so a label map stays a valid label map. Two deviations from
    plain ``DeepSupervisionLoss``:

    * integer label maps are accepted (resized as float, which is exact for nearest neighbour, and cast back);
    * a target smaller than an output raises ``ValueError``: up-sampling the ground truth adds no detail (the
      paper found naively up-scaled ground truth useless), so it almost always means a wrong target was passed.

    An alternative, closer to the public J-Net code (which resizes intermediate targets bilinearly), is
    area-averaged *soft* labels: one-hot encode the target, pass ``interp_mode="area"`` and a base loss without
    ``to_onehot_y``. Do not area-average an index label map: the averages of class indices are meaningless.

    Args:
        loss: base loss applied at every scale; default ``DiceCELoss(to_onehot_y=True, softmax=True)``, which
            expects >= 2 channels of logits and a label map with one channel. For a single-channel output (the
            paper's one-class setting) pass e.g. ``DiceCELoss(sigmoid=True)``.
        weights: optional per-scale weights (in the order of the outputs); default 1 for every scale.
        interp_mode: ``F.interpolate`` mode used to downsample the target.
    """

    def __init__(
        self,
        loss: _Loss | None = None,
        weights: Sequence[float] | None = None,
        interp_mode: str = "nearest-exact",
    ) -> None:
        if loss is None:
            loss = DiceCELoss(to_onehot_y=True, softmax=True)
        super().__init__(loss, weight_mode="same", weights=None if weights is None else list(weights))
        self.interp_mode = interp_mode

    def get_loss(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out_size = input.shape[2:]
        if out_size != target.shape[2:]:
            if any(o > t for o, t in zip(out_size, target.shape[2:])):
                raise ValueError(
                    f"target {tuple(target.shape[2:])} is smaller than output {tuple(out_size)}: "
                    "the ground truth must have at least the highest output resolution."
                )
            dtype = target.dtype
            target = F.interpolate(target.float(), size=out_size, mode=self.interp_mode)
            if not dtype.is_floating_point:
                target = target.to(dtype)
        return self.loss(input, target)  # type: ignore[no-any-return]

    def forward(self, input: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(input, (list, tuple)) and self.weights is not None and len(self.weights) != len(input):
            raise ValueError(f"got {len(input)} outputs but {len(self.weights)} weights.")
        return super().forward(input, target)  # type: ignore[arg-type]
