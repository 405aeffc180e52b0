"""Slab-wise 3D U-Net: predict a volume one thick slice ("slab") at a time, and train on random slabs.

A whole-volume 3D U-Net keeps feature maps of the whole volume in memory; a slab-wise one only those of a
``slab_size``-voxel-thick slab that spans the full extent of the other axes (Wehen, "A Comparative Study of
U-Net, Patch-wise U-Net, and Patch-wise U-Net Cascade", the slab-wise cascade study: 16-voxel slabs,
zero-padded last slab, no overlap).

**Axis convention.** Batched tensors are ``(B, C, H, W, D)`` (MONAI's channel-first layout of a NIfTI volume
in voxel-index order i, j, k) and dict-transform items ``(C, H, W, D)``. ``axis`` counts the *spatial* axes
only: ``0`` = H, ``1`` = W, ``2`` = D, and ``-1`` (the default) = D, the last axis, which is what the study's
text says ("slice the scan in the last dimension"). Its code sliced the brain volumes along ``axis=1``
(slabs of 240 x 16 x 155) and the liver volumes along ``axis=2`` (512 x 512 x 16).

**The study's 3D U-Net is** ``common.networks.get_network("unet", 3, C, K, init_filters=32, depth=4)``:
widths 32/64/128/256/512, two conv3x3x3(bias)-BatchNorm(momentum 0.1)-ReLU per level, 2x max-pooling,
``ConvTranspose3d(c, c/2, 2, stride 2)`` up-sampling, concatenated skips, 1x1x1 output conv, logits out. It
has 22,583,908 parameters for 4 input channels and 4 classes, the count of the study's ``UNet3d``; the pocket
version (32 feature maps at every level) has 618,820. The one difference: ``UNet3d`` zero-pads up-sampled
maps to the skip's size, so it accepts any size, while ours needs every axis to be a multiple of 16. The
inferers here therefore zero-pad the volume (or slab) at the end of each axis to the network's multiple and
crop the output back (``multiple``; read from the network's ``multiple`` attribute when not given).

**Training on slabs** (``RandSlabd``): foreground-weighted slab sampling, i.e. MONAI's
``RandCropByPosNegLabeld`` with a crop of ``slab_size`` along ``axis`` and the full extent elsewhere. See
``RandSlabd`` for why this and not the study's skipping of empty slabs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer, PatchInferer, SlidingWindowSplitter
from monai.inferers.merger import AvgMerger, Merger
from monai.transforms import Compose, DivisiblePadd, RandCropByPosNegLabeld, SpatialPadd
from monai.utils import convert_to_dst_type, convert_to_tensor

from common.errors import InvalidInputError

__all__ = [
    "RandSlabd",
    "SlabInferer",
    "SlabSplitter",
    "network_multiple",
    "slab_patch_size",
    "spatial_axis",
]


def spatial_axis(axis: int, spatial_dims: int) -> int:
    """``axis`` (negative counts from the last spatial axis) as an index into the spatial axes."""
    if not -spatial_dims <= axis < spatial_dims:
        raise InvalidInputError(f"axis {axis} is not a spatial axis of a {spatial_dims}D volume.")
    return axis % spatial_dims


def network_multiple(network: Any, spatial_dims: int) -> tuple[int, ...]:
    """The size multiple every spatial axis must have for ``network``: its ``multiple`` attribute
    (``PocketUNet`` has one: ``scale ** depth``), looked up through a ``DataParallel``/DDP ``module``; 1 if none."""
    net = getattr(network, "module", network)
    mult = getattr(net, "multiple", 1)
    return _per_axis(mult, spatial_dims, "multiple")


def _per_axis(value: int | Sequence[int], spatial_dims: int, name: str) -> tuple[int, ...]:
    values = (int(value),) * spatial_dims if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != spatial_dims or min(values) < 1:
        raise InvalidInputError(f"{name} must be a positive int or one per spatial axis ({spatial_dims}), got {value}.")
    return values


def slab_patch_size(
    spatial_shape: Sequence[int], slab_size: int | None, axis: int, multiple: int | Sequence[int] = 1
) -> tuple[int, ...]:
    """Patch size of one slab: ``slab_size`` along ``axis`` and every other axis rounded up to ``multiple``.

    ``slab_size=None`` gives one patch covering the whole volume (rounded up to ``multiple``).
    """
    nd = len(spatial_shape)
    mult = _per_axis(multiple, nd, "multiple")
    patch = [math.ceil(s / m) * m for s, m in zip(spatial_shape, mult)]
    if slab_size is not None:
        ax = spatial_axis(axis, nd)
        if slab_size < 1 or slab_size % mult[ax]:
            raise InvalidInputError(
                f"slab_size {slab_size} must be a positive multiple of {mult[ax]}, the size multiple the network "
                f"needs along axis {axis}."
            )
        patch[ax] = slab_size
    return tuple(patch)


def _parts(inputs: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    parts = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    return [p.as_tensor() if isinstance(p, MetaTensor) else p for p in parts]  # no meta bookkeeping per slab


class SlabSplitter(SlidingWindowSplitter):
    """MONAI's ``SlidingWindowSplitter(patch_size, overlap=0, pad_mode="constant")`` -- same slabs, same zero
    padding at the end -- but memory-frugal: it zero-pads each slab on its own instead of first making a
    padded copy of the whole volume, and it accepts a sequence of tensors on the same grid (the cascade's image
    and guidance) that it concatenates channel-wise per slab, in the first one's dtype, so no concatenated
    full-size copy is made either.
    """

    def __init__(self, patch_size: Sequence[int], device: torch.device | str | None = None) -> None:
        super().__init__(tuple(patch_size), overlap=0.0, offset=0, pad_mode="constant", pad_value=0, device=device)

    def get_input_shape(self, inputs: Any) -> tuple:
        return tuple(_parts(inputs)[0].shape[2:])

    def __call__(self, inputs: Any) -> Iterator[tuple[torch.Tensor, Sequence[int]]]:
        parts = _parts(inputs)
        spatial = parts[0].shape[2:]
        if any(p.shape[2:] != spatial or p.shape[0] != parts[0].shape[0] for p in parts):
            raise ValueError(f"inputs to concatenate differ in batch or spatial size: {[p.shape for p in parts]}.")
        size = tuple(self.patch_size)
        padded = self.get_padded_shape(inputs)
        for location in itertools.product(*(range(0, n, s) for n, s in zip(padded, size))):
            ends = [min(start + s, n) for start, s, n in zip(location, size, spatial)]
            region = (slice(None), slice(None), *(slice(start, end) for start, end in zip(location, ends)))
            pieces = [p[region].to(parts[0].dtype) for p in parts]
            slab = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
            pad = [v for start, end, s in reversed(list(zip(location, ends, size))) for v in (0, start + s - end)]
            if any(pad):
                slab = F.pad(slab, pad)
            yield convert_to_tensor(slab, device=self.device), location


class SlabInferer(Inferer):
    """Predict a volume slab by slab and reassemble the slabs exactly: an ``inferer`` for bundle configs.

    MONAI's ``PatchInferer`` with a ``SlidingWindowSplitter(overlap=0, pad_mode="constant")`` (as
    ``SlabSplitter``, which pads slab by slab): non-overlapping slabs of ``slab_size`` voxels along ``axis``
    (see the module docstring for the axis convention), the last one zero-padded, the other axes whole
    (zero-padded to ``multiple``); an ``AvgMerger`` writes each slab's
    output into its place (every voxel is predicted once, so the "average" is a copy) and crops the padding.
    ``SlidingWindowInferer(overlap=0)`` would shift the last window back to ``D - slab_size`` instead of
    padding it, which is not the study's reassembly.

    Args:
        slab_size: slab thickness in voxels (the study: 16); ``None`` predicts the whole volume in one call,
            only padded to ``multiple`` (used for the cascade's stage 1 and the whole-volume baseline).
        axis: spatial axis the volume is sliced along (``-1`` = last).
        multiple: size multiple the network needs on every axis; ``None`` reads it from the network
            (``network_multiple``).
        batch_size: slabs per network call.
        sw_device: where the slabs are put (the network's device); ``None`` = the input's device.
        device: where the reassembled output is kept; ``None`` = the input's device. With a CPU volume and
            ``sw_device="cuda"`` only one slab at a time is on the GPU, like the study's evaluation.
        merger_cls: MONAI merger class (``AvgMerger``; a Zarr merger keeps a huge output on disk).
    """

    def __init__(
        self,
        slab_size: int | None = 16,
        axis: int = -1,
        multiple: int | Sequence[int] | None = None,
        batch_size: int = 1,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        merger_cls: type[Merger] = AvgMerger,
    ) -> None:
        super().__init__()
        if slab_size is not None and slab_size < 1:
            raise InvalidInputError(f"slab_size must be >= 1 or None, got {slab_size}.")
        self.slab_size = slab_size
        self.axis = axis
        self.multiple = multiple
        self.batch_size = batch_size
        self.sw_device = sw_device
        self.device = device
        self.merger_cls = merger_cls

    def patch_size(self, spatial_shape: Sequence[int], network: Any = None) -> tuple[int, ...]:
        """The slab (patch) size used for a volume of ``spatial_shape``."""
        multiple = self.multiple if self.multiple is not None else network_multiple(network, len(spatial_shape))
        return slab_patch_size(spatial_shape, self.slab_size, self.axis, multiple)

    def __call__(
        self, inputs: torch.Tensor | Sequence[torch.Tensor], network: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """``(B, C, *spatial)`` -> the network's output for the whole volume, same spatial size.

        ``inputs`` may also be a sequence of tensors on the same grid: the network then sees them concatenated
        along the channels, one slab at a time (``SlabSplitter``).
        """
        parts = _parts(inputs)
        first = inputs if isinstance(inputs, torch.Tensor) else inputs[0]
        splitter = SlabSplitter(self.patch_size(parts[0].shape[2:], network), device=self.sw_device)
        patch_inferer = PatchInferer(
            splitter=splitter, merger_cls=self.merger_cls, batch_size=self.batch_size, match_spatial_shape=True,
            device=self.device if self.device is not None else parts[0].device,
        )
        out = patch_inferer(parts if len(parts) > 1 else parts[0], network, *args, **kwargs)
        if isinstance(out, torch.Tensor):  # carry the input's meta data (affine, ...) like MONAI's inferers
            out = convert_to_dst_type(out, first, device=out.device)[0]
        return out


class RandSlabd(Compose):
    """Random training slabs: ``slab_size`` voxels along ``axis``, the full extent of the other axes.

    Chain (MONAI transforms, all zero padding at the *end* of an axis, as the inferer pads):
    ``DivisiblePadd`` of the non-slab axes to ``multiple`` -> ``SpatialPadd`` of a volume thinner than a slab
    -> ``RandCropByPosNegLabeld`` with ``spatial_size`` = ``slab_size`` on ``axis`` and -1 (full) elsewhere.
    Returns a list of ``num_samples`` dicts (MONAI's ``list_data_collate`` batches them).

    Empty (all-background) slabs: we use **foreground-weighted sampling**: a slab is centred on a foreground
    voxel with probability ``pos / (pos + neg)`` (so it contains foreground), otherwise on a background voxel.
    Why not the short PocketNet paper's / the slab study's choice of skipping slabs with no foreground: (1) no
    compute is wasted reading and discarding slabs (most liver slabs are empty); (2) the network still sees
    some empty slabs, which make up most of a volume at inference, so it learns not to paint foreground there;
    (3) the foreground share is an explicit knob, like nnU-Net's foreground oversampling. With a background-
    including loss (the study's fix for the constant loss on empty slabs) or a batch Dice, ``neg`` slabs still
    give a useful gradient. ``pos=1, neg=0`` gives only slabs with foreground.

    Args:
        keys: keys cropped together (image, label, and e.g. the cascade's guidance channels).
        label_key: label used to find foreground (``> 0``) voxels.
        slab_size / axis: as in ``SlabInferer`` (``axis`` counts spatial axes, ``-1`` = last).
        pos / neg: the foreground/background centre ratio.
        num_samples: slabs per volume.
        multiple: pad the non-slab axes to this multiple (the network's ``scale ** depth``; 1 = no padding).
        fg_indices_key / bg_indices_key: precomputed indices (``FgBgToIndicesd``), worth it with a cache;
            they are flat indices, so compute them *after* padding the volume the same way (``DivisiblePadd``
            with ``k`` = ``multiple`` off the slab axis, 1 on it, ``method="end"``; the pads here are then
            no-ops).
        allow_missing_keys: as in MONAI.
    """

    def __init__(
        self,
        keys: str | Sequence[str],
        label_key: str = "label",
        slab_size: int = 16,
        axis: int = -1,
        pos: float = 1.0,
        neg: float = 1.0,
        num_samples: int = 1,
        multiple: int = 16,
        spatial_dims: int = 3,
        fg_indices_key: str | None = None,
        bg_indices_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        ax = spatial_axis(axis, spatial_dims)
        if slab_size < 1 or slab_size % multiple:
            raise InvalidInputError(f"slab_size {slab_size} must be a positive multiple of multiple={multiple}.")
        divisible = [multiple] * spatial_dims
        divisible[ax] = 1
        crop = [-1] * spatial_dims
        crop[ax] = slab_size
        super().__init__(
            [
                DivisiblePadd(keys, k=divisible, method="end", allow_missing_keys=allow_missing_keys),
                SpatialPadd(keys, spatial_size=crop, method="end", allow_missing_keys=allow_missing_keys),
                RandCropByPosNegLabeld(
                    keys, label_key=label_key, spatial_size=crop, pos=pos, neg=neg, num_samples=num_samples,
                    fg_indices_key=fg_indices_key, bg_indices_key=bg_indices_key,
                    allow_missing_keys=allow_missing_keys,
                ),
            ]
        )
        self.keys = tuple([keys] if isinstance(keys, str) else keys)
        self.slab_size = slab_size
        self.axis = axis
