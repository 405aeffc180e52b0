"""Two-stage slab-wise U-Net cascade: a low-resolution whole-volume stage 1 guides a slab-wise stage 2.

The method is the patch-wise U-Net cascade of Wehen, "A Comparative Study of U-Net, Patch-wise U-Net, and
Patch-wise U-Net Cascade" (bachelor thesis, 2023): the slab-wise cascade study, "the study" below.

Stage 1 is a 3D U-Net on the volume down-sampled by ``factor`` (the study: 0.3 for brain, 0.2 for liver;
trilinear, ``align_corners=True``, size ``floor(size * factor)`` -- what ``torch.nn.Upsample(scale_factor=...)``
and MONAI's ``Zoomd(keep_size=False)`` give -- then z-scored again). Stage 2 is a slab-wise U-Net
(``common.inference.slabs``) whose input is the image plus stage 1's segmentation, brought back to the full grid, as
``num_classes - 1`` extra **foreground one-hot channels** (nnU-Net's encoding; the background channel the study
also appended is ``1 - sum(foreground)`` and carries nothing).

Guidance channels, ``hard`` (default) or soft:

* ``hard=True``: the low-resolution label map is one-hot encoded, each class channel is up-sampled
  trilinearly to the full grid and the argmax is one-hot encoded again: a clean 0/1 mask, which is how
  nnU-Net resamples a segmentation (per label linear, then the most likely label).
* ``hard=False``: the up-sampled one-hot channels are kept soft (values in [0, 1]), as the study did.

Training stage 2, two modes (both give the same channels as inference):

* ``DownUpSampleLabeld`` (default, the study's way): guidance from the ground truth down-sampled by ``factor`` and
  up-sampled back -- no stage-1 model needed, both stages train independently. In hard mode the down-sampled
  ground truth is argmaxed first (it is then what a perfect stage 1 would output).
* ``Stage1Predictiond`` (nnU-Net's way): guidance from a trained stage-1 network's prediction, so stage 2
  learns to correct stage 1's actual mistakes. nnU-Net uses *out-of-fold* predictions (the stage-1 model of
  the fold that did not train on the case); otherwise stage 2 sees over-confident guidance.

Inference: ``CascadeInferer`` is a MONAI ``Inferer``; the bundle's ``network`` is stage 2 and the inferer holds
stage 1, so ``SupervisedEvaluator`` runs the whole cascade and writes one segmentation per volume.
``CascadeNet`` wraps both stages in one ``nn.Module`` for ``SimpleInferer`` and one-file checkpoints (it
is not TorchScript-able: the slab loop is MONAI's ``PatchInferer``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.networks.utils import one_hot
from monai.transforms import MapTransform, NormalizeIntensity, Zoom
from monai.utils import convert_to_dst_type
from torch import nn

from common.errors import InvalidInputError, MissingInputError
from common.inference.slabs import SlabInferer

__all__ = [
    "CascadeInferer",
    "CascadeNet",
    "DownUpSampleLabeld",
    "DownsampleLabeld",
    "Stage1Predictiond",
    "downsample",
    "label_guidance",
    "load_weights",
    "lowres_size",
    "stage1_guidance",
    "upsample_guidance",
]

Factor = float | Sequence[float]
_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _factors(factor: Factor, spatial_dims: int) -> tuple[float, ...]:
    f = (float(factor),) * spatial_dims if isinstance(factor, (int, float)) else tuple(float(v) for v in factor)
    if len(f) != spatial_dims or not all(0 < v <= 1 for v in f):
        raise InvalidInputError(f"factor must be in (0, 1], one value or one per spatial axis ({spatial_dims}); got "
                                f"{factor}.")
    return f


def lowres_size(spatial_shape: Sequence[int], factor: Factor) -> tuple[int, ...]:
    """Stage-1 grid: ``floor(size * factor)`` per axis (MONAI ``Zoom``'s rule), at least 1."""
    factors = _factors(factor, len(spatial_shape))
    return tuple(max(1, int(math.floor(float(s) * f))) for s, f in zip(spatial_shape, factors))


def _interpolate(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(Bi/tri)linear resampling with ``align_corners=True`` (the study's ``nn.Upsample`` and our ``Zoomd``)."""
    return F.interpolate(x, size=tuple(size), mode=_LINEAR[x.ndim - 2], align_corners=True)


def downsample(x: torch.Tensor, factor: Factor, renormalize: bool = False) -> torch.Tensor:
    """``(B, C, *S)`` image -> stage-1 input on the ``lowres_size`` grid, optionally z-scored again per item
    and channel (MONAI ``NormalizeIntensity(channel_wise=True)``: trilinear smoothing shrinks the spread)."""
    low = _interpolate(x.float(), lowres_size(x.shape[2:], factor))
    if renormalize:
        norm = NormalizeIntensity(channel_wise=True)
        low = torch.stack([torch.as_tensor(norm(item)) for item in low])
    return low


def upsample_guidance(
    lowres_onehot: torch.Tensor, spatial_size: Sequence[int], hard: bool = True, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(B, K, *s)`` one-hot (or soft) low-resolution classes -> ``(B, K - 1, *S)`` foreground guidance.

    One class channel is up-sampled at a time and the argmax is kept as ``uint8``, so a 512x512x500 liver
    volume needs about two float channels of temporary memory instead of ``K`` floats plus an int64 argmax.
    ``dtype`` of the hard guidance (``uint8`` keeps it at a quarter of the memory; soft guidance stays float).
    """
    num_classes = lowres_onehot.shape[1]
    if num_classes < 2:
        raise InvalidInputError(f"guidance needs background + at least one class, got {num_classes} channel(s).")

    def up(k: int) -> torch.Tensor:
        return _interpolate(lowres_onehot[:, k : k + 1].float(), spatial_size)

    if not hard:
        return torch.cat([up(k) for k in range(1, num_classes)], dim=1)
    best = up(0)
    label = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
    for k in range(1, num_classes):
        p = up(k)
        label[p > best] = k  # strict: ties go to the lower class, like argmax
        torch.maximum(best, p, out=best)
        del p
    del best
    return torch.cat([(label == k) for k in range(1, num_classes)], dim=1).to(dtype)


def _downsample_onehot(label: torch.Tensor, num_classes: int, factor: Factor) -> torch.Tensor:
    """``(B, 1, *S)`` label map -> soft ``(B, K, *s)`` trilinear down-sampled one-hot, one class at a time."""
    size = lowres_size(label.shape[2:], factor)
    return torch.cat([_interpolate((label == k).float(), size) for k in range(num_classes)], dim=1)


def label_guidance(label: torch.Tensor, num_classes: int, factor: Factor, hard: bool = True) -> torch.Tensor:
    """Ground truth ``(B, 1, *S)`` -> down-then-up-sampled ``(B, K - 1, *S)`` guidance (training stage 2)."""
    low = _downsample_onehot(label, num_classes, factor)
    if hard:  # what a perfect stage 1 would predict on its grid
        low = one_hot(low.argmax(dim=1, keepdim=True), num_classes, dim=1)
    return upsample_guidance(low, label.shape[2:], hard)


def _device_of(network: Any) -> torch.device | None:
    if isinstance(network, nn.Module):
        param = next(network.parameters(), None)
        return param.device if param is not None else None
    return None


def stage1_guidance(
    image: torch.Tensor,
    stage1: Callable[[torch.Tensor], torch.Tensor],
    factor: Factor,
    hard: bool = True,
    renormalize: bool = True,
    inferer: Inferer | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Image ``(B, C, *S)`` -> stage 1 on the down-sampled volume -> ``(B, K - 1, *S)`` guidance on the image's
    device. Stage 1 runs on its parameters' device; ``inferer`` defaults to the whole low-resolution volume
    zero-padded to the network's size multiple (``SlabInferer(slab_size=None)``)."""
    low = downsample(image, factor, renormalize)
    device = _device_of(stage1)
    if device is not None:
        low = low.to(device)
    logits = torch.as_tensor((inferer or SlabInferer(slab_size=None))(low, stage1))
    num_classes = logits.shape[1]
    labels = logits.argmax(dim=1, keepdim=True)
    del logits
    low_onehot = one_hot(labels, num_classes, dim=1).to(image.device)
    return upsample_guidance(low_onehot, image.shape[2:], hard, dtype)


class CascadeInferer(Inferer):
    """Whole cascade as an ``inferer(inputs, network)``: ``network`` is stage 2, stage 1 is held here.

    Steps: down-sample the image by ``factor`` (z-scored again), stage 1 on the whole low-resolution volume
    (``stage1_inferer``: default ``SlabInferer(slab_size=None)``, i.e. padded to the network's multiple; pass a
    ``SlidingWindowInferer`` for a volume too big for that), argmax, one-hot, up-sample to the full grid
    (``upsample_guidance``; hard guidance is kept as ``uint8``), stage 2 slab by slab (``SlabInferer``) on the
    image with the ``K - 1`` foreground channels appended (per slab) -> full-resolution logits ``(B, K, *S)``.

    Args:
        stage1: the stage-1 network (its output channel count ``K`` sets the guidance channels).
        factor: down-sampling factor (0.3 brain, 0.2 liver in the study), one value or one per axis.
        slab_size / axis / multiple / batch_size / sw_device / device: stage 2's ``SlabInferer``.
        hard: 0/1 guidance (default) or the study's soft up-sampled one-hot; must match stage 2's training.
        renormalize: z-score the down-sampled image again (the study did; stage 1 must be trained so).
        freeze_stage1: put stage 1 in eval mode and run it without autograd (the evaluator only switches
            ``network`` to eval); ``False`` leaves both to the caller (the benchmark's ``--grad`` setting).
        stage1_inferer: how stage 1 is run on the low-resolution volume.
    """

    def __init__(
        self,
        stage1: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        factor: Factor = 0.3,
        slab_size: int | None = 16,
        axis: int = -1,
        hard: bool = True,
        renormalize: bool = True,
        freeze_stage1: bool = True,
        stage1_inferer: Inferer | None = None,
        multiple: int | Sequence[int] | None = None,
        batch_size: int = 1,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.stage1 = stage1
        self.factor = factor
        self.hard = hard
        self.renormalize = renormalize
        self.freeze_stage1 = freeze_stage1
        self.stage1_inferer = stage1_inferer
        self.slab_inferer = SlabInferer(slab_size, axis, multiple, batch_size, sw_device, device)

    def guidance(self, inputs: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Stage 1's ``(B, K - 1, *S)`` foreground guidance for ``inputs`` (on the inputs' device)."""
        if self.freeze_stage1 and isinstance(self.stage1, nn.Module):
            self.stage1.eval()
        with torch.no_grad() if self.freeze_stage1 else nullcontext():
            return stage1_guidance(inputs, self.stage1, self.factor, self.hard, self.renormalize,
                                   self.stage1_inferer, dtype)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        image = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        guide = self.guidance(image, torch.uint8 if self.hard else image.dtype)  # 0/1 fits in a byte
        # image and guidance are concatenated slab by slab (SlabSplitter): no full-size stage-2 input copy
        out = self.slab_inferer((image, guide), network, *args, **kwargs)
        if isinstance(out, torch.Tensor):
            out = convert_to_dst_type(out, inputs, device=out.device)[0]
        return out


class CascadeNet(nn.Module):
    """Both stages in one module whose ``forward`` runs the whole cascade (``CascadeInferer``).

    For ``SimpleInferer`` and a single checkpoint; load the stages' separately trained weights into
    ``stage1`` / ``stage2`` (e.g. two ``CheckpointLoader`` handlers with ``load_dict`` ``{"model":
    "$@network.stage1"}``). Stage 1 always runs in eval mode without autograd.
    """

    def __init__(self, stage1: nn.Module, stage2: nn.Module, factor: Factor = 0.3, slab_size: int | None = 16,
                 axis: int = -1, hard: bool = True, renormalize: bool = True, batch_size: int = 1) -> None:
        super().__init__()
        self.stage1 = stage1
        self.stage2 = stage2
        self.inferer = CascadeInferer(stage1, factor, slab_size, axis, hard, renormalize, batch_size=batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inferer(x, self.stage2)


def load_weights(
    network: nn.Module, path: str, key: str = "model", map_location: str | torch.device = "cpu"
) -> nn.Module:
    """``network`` with the weights of a checkpoint (``state_dict`` or ``{key: state_dict}``, as MONAI's
    ``CheckpointSaver`` writes them), in eval mode: for stage 1 in the cascade configs, where its weights must
    be there before the inferer runs or ``Stage1Predictiond`` caches its predictions. A missing file is one
    sentence naming it."""
    if not os.path.isfile(path):
        raise MissingInputError(f"{path}: checkpoint not found (train that stage first, e.g. with "
                                "train_cascade_stage1.json).")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if key in state and isinstance(state[key], Mapping):
        state = state[key]
    network.load_state_dict(state)
    return network.eval()


def _item_to_batch(x: Any) -> torch.Tensor:
    t = x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
    return t[None]


class DownsampleLabeld(MapTransform):
    """Stage-1 training target: the label on the stage-1 grid.

    Each class's mask is down-sampled trilinearly (MONAI ``Zoom``, same grid and affine as ``Zoomd`` gives the
    image) -> ``soft=True``: the soft one-hot ``(K, *s)`` (the study's target; use a loss without
    ``to_onehot_y``); ``soft=False`` (default): its argmax ``(1, *s)``, the label a perfect stage 1 would
    output, matching ``DownUpSampleLabeld(hard=True)``.
    """

    def __init__(self, keys: str | Sequence[str], factor: Factor, num_classes: int, soft: bool = False,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.factor = factor
        self.num_classes = num_classes
        self.soft = soft

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key] if isinstance(d[key], torch.Tensor) else torch.as_tensor(d[key])
            nd = label.ndim - 1
            onehot = torch.cat([label == k for k in range(self.num_classes)], dim=0).float()  # keeps meta
            zoom = Zoom(zoom=_factors(self.factor, nd), mode=_LINEAR[nd], align_corners=True, keep_size=False)
            low = zoom(onehot)
            d[key] = low if self.soft else low.argmax(dim=0, keepdim=True).to(torch.uint8)
        return d


class DownUpSampleLabeld(MapTransform):
    """Stage-2 guidance from the ground truth (the study's training): ``label_guidance`` of ``keys`` stored as
    ``(K - 1, *S)`` float under ``out_key`` (then ``ConcatItemsd(keys=["image", out_key], name="image")``)."""

    def __init__(self, keys: str | Sequence[str], factor: Factor, num_classes: int, out_key: str = "guide",
                 hard: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"DownUpSampleLabeld takes one label key, got {self.keys}.")
        self.factor = factor
        self.num_classes = num_classes
        self.out_key = out_key
        self.hard = hard

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            guide = label_guidance(_item_to_batch(d[key]), self.num_classes, self.factor, self.hard)[0]
            d[self.out_key] = convert_to_dst_type(guide, d[key], dtype=torch.float32)[0]
        return d


class Stage1Predictiond(MapTransform):
    """Stage-2 guidance from a trained stage-1 network (nnU-Net's training): ``stage1_guidance`` of the image
    under ``keys`` stored as ``(K - 1, *S)`` float under ``out_key``.

    Deterministic, so a ``CacheDataset``/``PersistentDataset`` runs stage 1 once per case (its caching threads
    may use a GPU network; forked ``DataLoader`` workers should use a CPU one). The network is put in eval
    mode and run without autograd. For nnU-Net's out-of-fold guidance, give each fold's training cases the
    stage-1 model of the fold that held them out.
    """

    def __init__(self, keys: str | Sequence[str], network: nn.Module | Callable[[torch.Tensor], torch.Tensor],
                 factor: Factor, out_key: str = "guide", hard: bool = True, renormalize: bool = True,
                 inferer: Inferer | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"Stage1Predictiond takes one image key, got {self.keys}.")
        self.network = network
        self.factor = factor
        self.out_key = out_key
        self.hard = hard
        self.renormalize = renormalize
        self.inferer = inferer

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if isinstance(self.network, nn.Module):
            self.network.eval()
        for key in self.key_iterator(d):
            with torch.no_grad():
                guide = stage1_guidance(_item_to_batch(d[key]), self.network, self.factor, self.hard,
                                        self.renormalize, self.inferer)[0]
            d[self.out_key] = convert_to_dst_type(guide, d[key], dtype=torch.float32)[0]
        return d
