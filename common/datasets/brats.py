"""BraTS helpers the ``brats_tumor_mri_segmentation`` bundle configs call.

- :func:`find_cases`: inference input. A BraTS case is a folder of four MR files, not one image, so the
  NFBS-style ``find_images`` glob cannot build ``{"image": [t1, t1ce, t2, flair]}`` entries.
- :func:`case_name_formatter`: names a prediction after its case folder (``BraTS20_Training_001``) rather
  than after its first channel file (``..._t1``).
- :class:`RegionsToLabelsd`: turns the three sigmoid regions (TC, WT, ET) back into the native BraTS
  label map (0, 1, 2, 4) that BraTS tools and viewers expect.
- :class:`RandMaskedRicianNoised`: Rician noise on the raw MR magnitudes inside the brain only, so that the
  skull-stripped background stays exactly zero for the non-zero z-score that follows.
- :func:`stack_cases`: one 4D NIfTI per case (channels last, t1, t1ce, t2, flair) plus its mask, in the
  ``studies/`` + ``studies/labels/final/`` layout of MONAI Label, whose datastore holds one file per image.

CLI::

    python -m common.datasets.brats stack /data/MICCAI_BraTS2020_TrainingData studies
"""

from __future__ import annotations

import glob
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandRicianNoised

from common.data.datalists import BRATS_CHANNELS

__all__ = [
    "BRATS_CHANNELS",
    "RandMaskedRicianNoised",
    "RegionsToLabelsd",
    "case_name_formatter",
    "find_cases",
    "regions_to_labels",
    "stack_cases",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SKIPPED_FOLDERS = ("__MACOSX",)


def _channel_file(folder: str, channel: str) -> str:
    """The one ``*_<channel>.nii[.gz]`` (or BraTS 2023 ``*-<channel>``) file of ``folder``, else an error."""
    found = sorted(
        path
        for suffix in NIFTI_SUFFIXES
        for path in glob.glob(os.path.join(glob.escape(folder), f"*[_-]{channel}{suffix}"))
        if not os.path.basename(path).startswith("._")
    )
    if not found:
        name = os.path.basename(os.path.normpath(folder))
        raise FileNotFoundError(
            f"{folder}: case folder has no {channel} image (expected a file named like {name}_{channel}.nii "
            f"or {name}_{channel}.nii.gz)."
        )
    if len(found) > 1:
        names = ", ".join(os.path.basename(p) for p in found)
        raise FileNotFoundError(f"{folder}: case folder has more than one {channel} image ({names}).")
    return found[0]


def find_cases(
    dataset_dir: str, case_pattern: str = "*", channels: Sequence[str] = BRATS_CHANNELS
) -> list[dict[str, list[str]]]:
    """``[{"image": [t1, t1ce, t2, flair]}, ...]`` for every case folder under ``dataset_dir``.

    A case folder is a sub-folder matching ``case_pattern`` (hidden and ``__MACOSX`` folders are skipped;
    loose files such as ``name_mapping.csv`` are ignored). Each must hold exactly one file per channel,
    named ``*_<channel>.nii`` or ``.nii.gz`` as in the BraTS releases (``-<channel>`` also matches, as in
    BraTS 2023: pass ``channels=("t1n", "t1c", "t2w", "t2f")``); masks in the folder are ignored. A
    folder missing a channel raises ``FileNotFoundError`` naming the folder and the file it lacks.
    """
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"{dataset_dir}: input folder does not exist.")
    folders = sorted(
        path
        for path in glob.glob(os.path.join(glob.escape(dataset_dir), case_pattern))
        if os.path.isdir(path) and not os.path.basename(path).startswith(".")
        and os.path.basename(path) not in SKIPPED_FOLDERS
    )
    if not folders:
        raise FileNotFoundError(f"{dataset_dir}: no case folder matches {case_pattern!r}.")
    return [{"image": [_channel_file(folder, channel) for channel in channels]} for folder in folders]


def case_name_formatter(metadict: Mapping[str, Any], saver: Any = None) -> dict[str, Any]:
    """``SaveImaged`` ``output_name_formatter``: name the prediction after the case, not the t1 file.

    ``LoadImaged`` records the first of the four files as ``filename_or_obj``; naming the output after it
    would give ``BraTS20_Training_001_t1_seg.nii.gz``. A file named ``<folder>_*`` (or ``<folder>-*``) gives
    the folder name; any other file (e.g. a stacked 4D ``BraTS20_Training_001.nii.gz``) its own stem.
    """
    source = metadict.get("filename_or_obj", "case")
    if isinstance(source, (list, tuple)):
        source = source[0]
    path = os.path.abspath(str(source))
    folder, base = os.path.basename(os.path.dirname(path)), os.path.basename(path)
    if folder and base.startswith((folder + "_", folder + "-")):
        subject = folder
    else:
        subject = next((base[: -len(s)] for s in NIFTI_SUFFIXES if base.endswith(s)), base)
    return {"subject": subject, "idx": metadict.get("patch_index")}


def regions_to_labels(regions: torch.Tensor) -> torch.Tensor:
    """(3, *spatial) binary TC, WT, ET masks -> (1, *spatial) BraTS labels: ET 4, TC-ET 1, WT-TC 2, else 0.

    Painted in nesting order (WT, then TC, then ET) so an inconsistent prediction still gets one value per
    voxel, the innermost region winning, as BraTS defines ET within TC within WT.
    """
    if regions.shape[0] != 3:
        raise ValueError(f"expected 3 region channels (TC, WT, ET), got shape {tuple(regions.shape)}.")
    plain = regions.as_tensor() if isinstance(regions, MetaTensor) else torch.as_tensor(regions)
    masks = plain > 0
    labels = torch.zeros_like(plain[:1], dtype=torch.float32)
    labels[masks[1:2]] = 2
    labels[masks[0:1]] = 1
    labels[masks[2:3]] = 4
    if isinstance(regions, MetaTensor):  # keep the affine and file name for Invertd/SaveImaged
        labels = MetaTensor(labels, meta=regions.meta, applied_operations=regions.applied_operations)
    return labels


class RegionsToLabelsd(MapTransform):
    """Dictionary version of :func:`regions_to_labels`, for the inference post-processing."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = regions_to_labels(d[key])
        return d


class RandMaskedRicianNoised(RandRicianNoised):
    """MONAI ``RandRicianNoised``, then the voxels that were zero in every channel are set back to zero.

    Rician noise models magnitude MR, so it belongs on the raw intensities, before the z-score; but adding
    it to the skull-stripped background would make that background non-zero and change what the non-zero
    normalisation (and the foreground crop) sees. Same arguments as ``RandRicianNoised``.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        masks = {key: torch.as_tensor(data[key]).ne(0).any(dim=0, keepdim=True) for key in self.key_iterator(data)}
        d = super().__call__(data)
        for key, mask in masks.items():
            d[key] = d[key] * mask.to(device=torch.as_tensor(d[key]).device)
        return d


def _label_file(folder: str, channel_files: Sequence[str]) -> str | None:
    """The case's mask: the one other NIfTI of the folder (``*_seg.nii`` or case 355's alias), if any."""
    others = sorted(
        path
        for suffix in NIFTI_SUFFIXES
        for path in glob.glob(os.path.join(glob.escape(folder), f"*{suffix}"))
        if path not in channel_files and not os.path.basename(path).startswith("._")
    )
    if len(others) > 1:
        names = ", ".join(os.path.basename(p) for p in others)
        raise FileNotFoundError(f"{folder}: case folder has more than one candidate mask ({names}).")
    return others[0] if others else None


def stack_cases(
    dataset_dir: str, out: str, case_pattern: str = "*", channels: Sequence[str] = BRATS_CHANNELS
) -> list[str]:
    """Write ``OUT/<case>.nii.gz`` (4D, channels last) and ``OUT/labels/final/<case>.nii.gz`` per case folder.

    The bundle's preprocessing reads such a 4D file exactly like the four separate files (EnsureChannelFirstd
    moves the last axis first), so it is a way to give the 4-channel model to tools that pass one file per
    image, such as MONAI Label. Returns the written image paths.
    """
    import nibabel as nib
    import numpy as np

    labels_dir = os.path.join(out, "labels", "final")
    written = []
    for case in find_cases(dataset_dir, case_pattern, channels):
        files = case["image"]
        folder = os.path.dirname(files[0])
        name = os.path.basename(folder)
        first = nib.load(files[0])
        volume = np.stack([np.asanyarray(nib.load(f).dataobj) for f in files], axis=-1)
        image = nib.Nifti1Image(volume, first.affine, first.header)
        os.makedirs(out, exist_ok=True)
        target = os.path.join(out, f"{name}.nii.gz")
        nib.save(image, target)
        written.append(target)
        label = _label_file(folder, files)
        if label is not None:
            os.makedirs(labels_dir, exist_ok=True)
            mask = nib.load(label)
            nib.save(nib.Nifti1Image(np.asanyarray(mask.dataobj), mask.affine, mask.header),
                     os.path.join(labels_dir, f"{name}.nii.gz"))
    return written


def main() -> None:
    """Entry point of ``python -m common.datasets.brats``."""
    import fire

    def stack(dataset_dir: str, out: str, case_pattern: str = "*", channels: Sequence[str] = BRATS_CHANNELS) -> str:
        written = stack_cases(dataset_dir, out, case_pattern, channels)
        return f"wrote {len(written)} 4-channel images to {out} (masks under {os.path.join(out, 'labels', 'final')})"

    fire.Fire({"stack": stack})


if __name__ == "__main__":
    main()
