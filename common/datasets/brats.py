"""BraTS 2020, brain tumour (glioma) segmentation from four MR channels: what the bundle needs to know of it.

- :func:`build_datalist`: the canonical training list (369 cases), fixed by the release's file names,
  committed as ``data_lists/brats2020.json``.
- :func:`write_lookalike`: a small synthetic BraTS in the real layout (skull-stripped flair/t1/t1ce/t2 and
  a glioma mask with the native labels 0, 1 NCR, 2 ED, 4 ET; case 355's odd mask name).
- :func:`find_cases`: inference input. A BraTS case is a folder of four MR files, not one image, so the
  NFBS-style ``find_images`` glob cannot build ``{"image": [t1, t1ce, t2, flair]}`` entries.
- :func:`case_name_formatter`: names a prediction after its case folder (``BraTS20_Training_001``) rather
  than after its first channel file (``..._t1``).
- :class:`RegionsToLabelsd`: turns the three sigmoid regions (TC, WT, ET) back into the native BraTS
  label map (0, 1, 2, 4) that BraTS tools and viewers expect.
- :class:`RandMaskedRicianNoised`: Rician noise on the raw MR magnitudes inside the brain only, so that the
  skull-stripped background stays exactly zero for the non-zero z-score that follows.
- :func:`stack` / :func:`stack_cases`: one 4D NIfTI per case (channels last, t1, t1ce, t2, flair) plus its
  mask, in the ``studies/`` + ``studies/labels/final/`` layout of MONAI Label, whose datastore holds one
  file per image.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandRicianNoised
from scipy import ndimage

from common.data.datacheck import ITK_SUFFIXES
from common.data.datalists import NUM_FOLDS, SEED, assign_folds, datalist_header, finish_datalist, save_datalist
from common.data.synthetic import (
    bias_field,
    blob,
    case_ids,
    case_rng,
    coordinate_grid,
    jitter_shape,
    lookup,
    min_radius,
    random_affine,
    random_voxel,
    rician_noise,
    save_nifti,
    smooth_noise,
)
from common.errors import InvalidInputError, MissingInputError

__all__ = [
    "BRATS_CHANNELS",
    "COMMITTED_LIST",
    "RandMaskedRicianNoised",
    "RegionsToLabelsd",
    "build_datalist",
    "case_name_formatter",
    "find_cases",
    "lookalike_datalist",
    "regions_to_labels",
    "stack",
    "stack_cases",
    "write_lookalike",
]

#: The four MR channels in the order the data list and the network's input use.
BRATS_CHANNELS = ("t1", "t1ce", "t2", "flair")
#: File name of the committed list under ``data_lists/`` (see ``common.datasets.write_all``).
COMMITTED_LIST = "brats2020.json"


# --------------------------------------------------------------------------------------- data list
def build_datalist(out: str | None = None, suffix: str = ".nii") -> dict:
    """Canonical BraTS 2020 training list (369 cases); ``image`` lists t1, t1ce, t2, flair in that order.

    Case 355's mask has a non-standard file name in the official release and is aliased here.
    """
    cases = [f"BraTS20_Training_{n:03d}" for n in range(1, 370)]
    folds = assign_folds(cases)
    datalist = datalist_header(
        "BraTS 2020",
        "BraTS 2020 training data, 369 cases. Paths are relative to the MICCAI_BraTS2020_TrainingData "
        "folder. 'image' lists the four MR channels in the order t1, t1ce, t2, flair. Labels are the "
        "native BraTS values 0, 1 (NCR/NET), 2 (edema), 4 (enhancing tumour). Case 355's mask is "
        f"W39_1998.09.19_Segm.nii in the official release. Folds: {NUM_FOLDS}, seed {SEED}.",
        {
            "0": "background",
            "1": "necrotic and non-enhancing tumour core",
            "2": "peritumoral edema",
            "4": "enhancing tumour",
        },
        {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
    )
    training = []
    for case in cases:
        label = f"{case}/{case}_seg{suffix}"
        if case == "BraTS20_Training_355":
            label = f"{case}/W39_1998.09.19_Segm{suffix}"
        image = [f"{case}/{case}_{c}{suffix}" for c in BRATS_CHANNELS]
        training.append({"image": image, "label": label, "fold": folds[case]})
    datalist["training"] = training
    datalist["testing"] = []
    return finish_datalist(datalist, out)


def lookalike_datalist(dataset_dir: str, out: str) -> str:
    """The canonical list cut down to the case folders in ``dataset_dir``, each keeping its fold, written to ``out``.

    A look-alike written with some case numbers (``write_lookalike(ids=...)``) then splits as the real release
    does, case 355's mask alias included. Returns ``out``.
    """
    names = {n for n in os.listdir(dataset_dir) if os.path.isdir(os.path.join(dataset_dir, n))}
    datalist = build_datalist()
    datalist["training"] = [e for e in datalist["training"] if e["label"].split("/")[0] in names]
    save_datalist(datalist, out)
    return out


# ---------------------------------------------------------------------------------------- look-alike
# the look-alike draws its channels in this order (that of a case folder's listing): changing it changes every image
_DRAW_ORDER = ("flair", "t1", "t1ce", "t2")
# tissue classes: 0 background, 1 CSF, 2 grey matter, 3 white matter, 4 edema, 5 enhancing, 6 necrosis
_LUT = {
    "flair": [0, 60, 400, 320, 820, 600, 300],
    "t1": [0, 110, 360, 500, 280, 320, 150],
    "t1ce": [0, 120, 380, 520, 300, 1150, 160],
    "t2": [0, 950, 520, 330, 820, 620, 1000],
}


def _case(rng: np.random.Generator, size: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A skull-stripped brain with a glioma: necrosis inside an enhancing rim inside edema."""
    shape = jitter_shape(rng, (size, size, size))
    spacing = rng.uniform(0.8, 1.3, 3)
    affine = random_affine(rng, shape, spacing)
    g = coordinate_grid(shape)
    head = blob(g, rng.uniform(-0.05, 0.05, 3), rng.uniform([0.72, 0.82, 0.7], [0.82, 0.92, 0.8]), rng, 0.08)
    folds = smooth_noise(rng, shape, sigma=max(1.0, size / 14))
    brain = head < 1.0
    wm = brain & (head + 0.08 * folds < 0.72)
    csf = brain & (head > 0.9) & (folds > 0.6)
    for side in (-1, 1):
        c = [side * rng.uniform(0.06, 0.1), rng.uniform(-0.05, 0.1), rng.uniform(0.0, 0.15)]
        csf |= (blob(g, c, rng.uniform([0.05, 0.18, 0.08], [0.08, 0.26, 0.12]), rng, wobble=0.15) < 1) & wm

    center = np.asarray(random_voxel(rng, head < 0.5, g))
    r_ed = min_radius(rng.uniform(0.3, 0.45, 3), shape, 5)
    r_core = min_radius(r_ed * rng.uniform(0.45, 0.6), shape, 3)
    r_nec = min_radius(r_core * rng.uniform(0.4, 0.6), shape, 1.5)
    edema = (blob(g, center, r_ed, rng, wobble=0.3, waves=4) < 1.0) & brain
    core_c = center + rng.uniform(-0.25, 0.25, 3) * (r_ed - r_core)
    core = (blob(g, core_c, r_core, rng, wobble=0.2) < 1.0) & ndimage.binary_erosion(edema, iterations=2)
    necrosis = (blob(g, core_c, r_nec, rng, wobble=0.1) < 1.0) & ndimage.binary_erosion(core, iterations=1)

    tissue = np.zeros(shape, dtype=np.int8)
    tissue[brain] = 2
    tissue[wm] = 3
    tissue[csf] = 1
    tissue[edema] = 4
    tissue[core] = 5
    tissue[necrosis] = 6
    seg = np.zeros(shape, dtype=np.uint8)
    seg[edema] = 2
    seg[core] = 4
    seg[necrosis] = 1

    texture = 1.0 + 0.05 * smooth_noise(rng, shape, 1.0)
    images = {}
    for mod in _DRAW_ORDER:
        img = ndimage.gaussian_filter(lookup(tissue, _LUT[mod]), 0.7) * texture
        img *= bias_field(g, rng, 0.25) * rng.uniform(0.7, 1.4)
        img = rician_noise(rng, img, 0.02 * float(img.max()))
        images[mod] = np.where(brain, np.clip(np.rint(img), 1, 32767), 0).astype(np.int16)
    return images, seg, affine


def write_lookalike(out: str, cases: int = 8, seed: int = 0, size: int = 48, ids: list[int] | None = None) -> str:
    """Write ``OUT/MICCAI_BraTS2020_TrainingData/BraTS20_Training_NNN/BraTS20_Training_NNN_{mod}.nii``.

    Case numbers are 1..cases, or ``ids`` when given (then ``cases`` is ignored). Case 355's mask gets the
    real release's odd name ``W39_1998.09.19_Segm.nii`` so loaders' aliasing is exercised. A
    ``name_mapping.csv`` sits beside the case folders as in the real release. Returns the training folder.
    """
    if ids is None:
        numbers = [i + 1 for i in case_ids(cases)]
    else:
        numbers = [int(n) for n in ([ids] if isinstance(ids, int) else ids)]
        if not numbers or len(set(numbers)) != len(numbers) or min(numbers) < 0:
            raise InvalidInputError(f"ids must be distinct non-negative case numbers, got {ids}")
    root = os.path.join(out, "MICCAI_BraTS2020_TrainingData")
    os.makedirs(root, exist_ok=True)
    rows = []
    for k, n in enumerate(numbers):
        name = f"BraTS20_Training_{n:03d}"
        images, seg, affine = _case(case_rng(seed, n), size)
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for mod, img in images.items():
            save_nifti(img, affine, os.path.join(folder, f"{name}_{mod}.nii"))
        seg_name = "W39_1998.09.19_Segm.nii" if n == 355 else f"{name}_seg.nii"
        save_nifti(seg, affine, os.path.join(folder, seg_name))
        rows.append(f"HGG,NA,NA,NA,NA,{name}")
        print(f"[brats] {k + 1}/{len(numbers)} {name} shape={seg.shape} "
              f"tumour={int((seg > 0).sum())} vox mask={seg_name}", flush=True)
    header = "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,BraTS_2019_subject_ID," \
             "BraTS_2020_subject_ID"
    with open(os.path.join(root, "name_mapping.csv"), "w") as f:
        f.write("\n".join([header, *rows]) + "\n")
    return root


# ------------------------------------------------------------------------------------ inference input
NIFTI_SUFFIXES = (".nii.gz", ".nii")  # the longer first: case names strip the suffix
IMAGE_SUFFIXES = (*NIFTI_SUFFIXES, *ITK_SUFFIXES)  # what the data check and MONAI's LoadImage read
SKIPPED_FOLDERS = ("__MACOSX",)


def _channel_file(folder: str, channel: str) -> str:
    """The one ``*_<channel>`` (or BraTS 2023 ``*-<channel>``) image of ``folder``, else an error.

    The image is a NIfTI, NRRD or MetaImage file (``IMAGE_SUFFIXES``) or a sub-folder holding a DICOM series.
    """
    pattern = os.path.join(glob.escape(folder), f"*[_-]{channel}")
    found = sorted(
        path
        for suffix in IMAGE_SUFFIXES
        for path in glob.glob(pattern + suffix)
        if not os.path.basename(path).startswith("._")
    ) + sorted(path for path in glob.glob(pattern) if os.path.isdir(path))
    if not found:
        name = os.path.basename(os.path.normpath(folder))
        raise MissingInputError(
            f"{folder}: case folder has no {channel} image (expected a file named like {name}_{channel}.nii.gz, "
            f"with another image suffix ({', '.join(IMAGE_SUFFIXES[1:])}) or a DICOM series folder {name}_{channel})."
        )
    if len(found) > 1:
        names = ", ".join(os.path.basename(p) for p in found)
        raise MissingInputError(f"{folder}: case folder has more than one {channel} image ({names}).")
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
        raise MissingInputError(f"{dataset_dir}: input folder does not exist.")
    folders = sorted(
        path
        for path in glob.glob(os.path.join(glob.escape(dataset_dir), case_pattern))
        if os.path.isdir(path) and not os.path.basename(path).startswith(".")
        and os.path.basename(path) not in SKIPPED_FOLDERS
    )
    if not folders:
        raise MissingInputError(f"{dataset_dir}: no case folder matches {case_pattern!r}.")
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
        subject = next((base[: -len(s)] for s in IMAGE_SUFFIXES if base.endswith(s)), base)
    return {"subject": subject, "idx": metadict.get("patch_index")}


# ----------------------------------------------------------------------------------------- transforms
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


# ------------------------------------------------------------------------------- 4D stacks (MONAI Label)
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
        raise MissingInputError(f"{folder}: case folder has more than one candidate mask ({names}).")
    return others[0] if others else None


def stack_cases(
    dataset_dir: str, out: str, case_pattern: str = "*", channels: Sequence[str] = BRATS_CHANNELS
) -> list[str]:
    """Write ``OUT/<case>.nii.gz`` (4D, channels last) and ``OUT/labels/final/<case>.nii.gz`` per case folder.

    The bundle's preprocessing reads such a 4D file exactly like the four separate files (EnsureChannelFirstd
    moves the last axis first), so it is a way to give the 4-channel model to tools that pass one file per
    image, such as MONAI Label. Returns the written image paths.
    """
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


def stack(dataset_dir: str, out: str, case_pattern: str = "*", channels: Sequence[str] = BRATS_CHANNELS) -> str:
    """BraTS: write one 4-channel NIfTI per case (``channels`` in order) under ``out``; one-line summary."""
    written = stack_cases(dataset_dir, out, case_pattern, channels)
    return f"wrote {len(written)} 4-channel images to {out} (masks under {os.path.join(out, 'labels', 'final')})"
