"""MSD Task05 (prostate), from the Medical Segmentation Decathlon: peripheral (1) and transition (2) zones.

- :func:`build_datalist`: the data list of a user's ``Task05_Prostate`` download, converted from its
  ``dataset.json`` (macOS ``._`` junk entries dropped, folds added).
- :func:`write_lookalike`: a small synthetic Task05 in the real layout (4D channel-last T2 + ADC pelvis
  slabs with thick slices; the ``dataset.json``; a macOS ``._`` junk file as in the real tarball).
"""

from __future__ import annotations

import json
import os

import numpy as np
from scipy import ndimage

from common.data.datalists import NUM_FOLDS, assign_folds, dataset_root, finish_datalist
from common.data.synthetic import (
    bias_field,
    blob,
    case_ids,
    case_rng,
    coordinate_grid,
    lookup,
    min_radius,
    random_affine,
    rician_noise,
    save_nifti,
    smooth_noise,
)
from common.errors import InvalidInputError, MissingInputError

__all__ = ["COMMITTED_LIST", "build_datalist", "write_lookalike"]

#: The list is built from the user's download (see ``common.datasets``); nothing is committed.
COMMITTED_LIST = None


# --------------------------------------------------------------------------------------- data list
def _norm_rel(path: str) -> str:
    """``./imagesTr/x`` -> ``imagesTr/x``: the MSD lists' paths, without the leading ``./``."""
    while path.startswith("./"):
        path = path[2:]
    return path


def _is_junk(path: str) -> bool:
    """macOS ``._`` resource-fork files, which the MSD tarballs list beside the real images."""
    return os.path.basename(path).startswith("._")


def build_datalist(dataset_dir: str, out: str | None = None) -> dict:
    """Convert an MSD task's ``dataset.json`` into a fold-annotated list (paths without ``./``).

    Written for Task05 (prostate) but only reads the MSD ``dataset.json`` format, so it serves any MSD task.
    """
    root = dataset_root(dataset_dir, "MSD task")
    src_file = root / "dataset.json"
    if not src_file.is_file():
        raise MissingInputError(f"MSD task folder {root} has no dataset.json.")
    src = json.loads(src_file.read_text(encoding="utf-8"))
    training = []
    for i, item in enumerate(src.get("training", [])):
        if not isinstance(item, dict) or "image" not in item:
            raise InvalidInputError(f"{src_file}: training entry {i} is not an object with an 'image' path.")
        entry = {k: _norm_rel(v) if isinstance(v, str) else v for k, v in item.items()}
        if any(isinstance(v, str) and _is_junk(v) for v in entry.values()):
            continue
        training.append(entry)
    folds = assign_folds(e["image"] for e in training)
    for entry in training:
        entry["fold"] = folds[entry["image"]]
    testing = []
    for item in src.get("test", src.get("testing", [])):
        image = item if isinstance(item, str) else item.get("image")
        if not isinstance(image, str):
            raise InvalidInputError(f"{src_file}: test entry {item!r} has no image path.")
        if not _is_junk(image):
            testing.append({"image": _norm_rel(image)})
    datalist = {key: src[key] for key in ("name", "description") if key in src}
    datalist.setdefault("name", root.name)
    datalist.setdefault("description", f"Medical Segmentation Decathlon {root.name}.")
    for key in ("tensorImageSize", "modality", "labels"):
        if key in src:
            datalist[key] = src[key]
    datalist["num_folds"] = NUM_FOLDS
    datalist["training"] = training
    datalist["testing"] = testing
    return finish_datalist(datalist, out)


# ---------------------------------------------------------------------------------------- look-alike
def _case(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pelvis slab: fat, muscles, bones, rectum, prostate with a dark capsule, bright PZ and darker TZ."""
    nxy = max(8, int(round(size * rng.uniform(0.85, 1.15))))
    nz = max(4, int(round(rng.integers(12, 21) * size / 64)))
    shape = (nxy, nxy, nz)
    sxy = rng.uniform(0.5, 0.75)
    affine = random_affine(rng, shape, (sxy, sxy, rng.uniform(3.0, 4.0)))
    g = coordinate_grid(shape)
    x, y, z = g
    body = np.broadcast_to(blob([x, y], [0.0, 0.0], rng.uniform([1.0, 0.9], [1.1, 1.0]), rng, 0.04), shape)
    muscle = np.zeros(shape, dtype=bool)
    femur = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        muscle |= blob([x, y], [side * rng.uniform(0.5, 0.6), 0.0], [0.14, 0.35], rng, 0.1) < 1.0
        femur |= blob([x, y], [side * rng.uniform(0.82, 0.9), 0.1], [0.2, 0.22], rng, 0.05) < 1.0
    pubis = blob([x, y], [0.0, rng.uniform(0.55, 0.65)], [0.25, 0.12], rng, 0.1) < 1.0
    rectum = np.broadcast_to(blob([x, y], [0.0, rng.uniform(-0.55, -0.5)], [0.18, 0.14], rng, 0.1), shape)

    pc = [rng.uniform(-0.05, 0.05), rng.uniform(-0.08, 0.0), rng.uniform(-0.15, 0.15)]
    pr = rng.uniform([0.3, 0.24, 0.5], [0.38, 0.3, 0.7])  # apex and base slices stay free of gland
    pr[:2] = min_radius(pr[:2], shape, 2.5)
    prost = blob(g, pc, pr, rng, wobble=0.1)
    tc = [pc[0], pc[1] + 0.3 * pr[1], pc[2] + 0.1 * pr[2]]
    tz = (blob(g, tc, pr * rng.uniform(0.55, 0.65), rng, wobble=0.12) < 1.0) & (prost < 0.85)
    gland = prost < 1.0

    tissue = np.zeros(shape, dtype=np.int8)  # 0 air
    tissue[body < 1.0] = 1  # fat
    tissue[muscle & (body < 1.0)] = 2
    tissue[femur & (body < 1.0)] = 3
    tissue[pubis & (body < 1.0)] = 4
    tissue[rectum < 1.0] = 5  # rectal wall
    tissue[rectum < 0.55] = 6  # lumen
    tissue[prost < 1.15] = 7  # capsule
    tissue[gland] = 8  # PZ
    tissue[tz] = 9  # TZ
    texture = smooth_noise(rng, shape, (1.5, 1.5, 0.5))
    t2 = lookup(tissue, [0, 560, 210, 430, 150, 220, 70, 170, 760, 380])
    t2 *= 1.0 + np.where(tz, 0.15, 0.06) * texture
    t2 = ndimage.gaussian_filter(t2, (0.7, 0.7, 0.3)) * bias_field(g, rng, 0.35) * rng.uniform(0.6, 1.6)
    t2 = rician_noise(rng, t2, 14.0)
    adc = lookup(tissue, [0, 250, 1350, 450, 500, 1100, 300, 900, 1700, 1200])
    adc = ndimage.gaussian_filter(adc, (0.8, 0.8, 0.3))
    adc = np.clip(adc + rng.standard_normal(shape, dtype=np.float32) * 110.0, 0, None)
    image = np.stack([t2, adc], axis=-1).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    label[gland] = 1
    label[tz] = 2
    return image, label, affine


_APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4070)


def write_lookalike(out: str, cases: int = 8, seed: int = 0, size: int = 64) -> str:
    """Write MSD ``OUT/Task05_Prostate/{dataset.json,imagesTr,labelsTr,imagesTs}``; return that folder.

    ``cases`` training cases plus ``max(1, cases // 2)`` test images, numbered ``prostate_NN`` from one
    shuffled range (train and test interleave as in the real set; 00 is always a training case). Images
    are 4D channel-last (T2, ADC); a macOS ``._prostate_00.nii.gz`` junk file is written into imagesTr.
    """
    case_ids(cases)
    n_test = max(1, int(cases) // 2)
    total = int(cases) + n_test
    width = max(2, len(str(total - 1)))
    order = case_rng(seed, 10**6).permutation(np.arange(1, total)).tolist()
    train_ids = [0, *order[: cases - 1]]
    test_ids = sorted(order[cases - 1 :])
    root = os.path.join(out, "Task05_Prostate")
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    training, test = [], []
    for k, n in enumerate(sorted(train_ids) + test_ids):
        name = f"prostate_{n:0{width}d}.nii.gz"
        image, label, affine = _case(case_rng(seed, n), size)
        if n in test_ids:
            save_nifti(image, affine, os.path.join(root, "imagesTs", name))
            test.append(f"./imagesTs/{name}")
            kind = "Ts"
        else:
            save_nifti(image, affine, os.path.join(root, "imagesTr", name))
            save_nifti(label, affine, os.path.join(root, "labelsTr", name))
            kind = "Tr"
        print(f"[prostate] {k + 1}/{total} images{kind}/{name} shape={image.shape}", flush=True)
    # the real list is in no particular order; keep the shuffled order so nothing relies on sorting
    for n in train_ids:
        name = f"prostate_{n:0{width}d}.nii.gz"
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    with open(os.path.join(root, "imagesTr", f"._prostate_{0:0{width}d}.nii.gz"), "wb") as f:
        f.write(_APPLE_DOUBLE)
    meta = {
        "name": "PROSTATE",
        "description": "Prostate transitional zone and peripheral zone segmentation",
        "reference": "Radboud University, Nijmegen Medical Centre",
        "licence": "CC-BY-SA 4.0",
        "relase": "1.0 04/05/2018",
        "tensorImageSize": "4D",
        "quantitative": [0, 1],
        "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump(meta, f, indent=4)
    return root
