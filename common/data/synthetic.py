"""Write small synthetic ("look-alike") datasets in the exact file layout of the real ones.

Why: NFBS, LiTS, BraTS 2020, COVIDx V8B and MSD Task05 (prostate) cannot be downloaded in CI, here or
on a new user's laptop, yet the bundles' data lists, loaders, resampling and training loops must run on
files that look like the real thing: the same folder and file names, formats, dtypes, label values and
quirks (BraTS case 355's mask name, macOS ``._`` files in the MSD tarball, 4D channel-last MSD images,
the 4-field COVIDx split files). The contents are anatomy-like and learnable: each foreground is a smooth,
clearly contrasted blob, with noise, texture and a mild bias field so that it is not a fixed threshold.
Every case varies in shape and voxel spacing (written into the NIfTI affine) to exercise resampling.

Usage::

    python -m common.data.lookalike nfbs --out /tmp/nfbs --cases 8
    python -m common.data.lookalike lits --out /tmp/lits --cases 4 --seed 1 --size 64
    python -m common.data.lookalike brats --out /tmp/brats --ids '[354,355]'
    python -m common.data.lookalike covidx --out /tmp/covidx --cases 40
    python -m common.data.lookalike prostate --out /tmp/msd --cases 8

Each generator is also a function (``write_nfbs`` ...) that returns the dataset root, i.e. the folder a
user passes as ``dataset_dir``. Output is deterministic for a given seed: every case draws from its own
generator seeded with ``(seed, case number)``, so a case does not change when others are added.
"""

import json
import os
from collections.abc import Sequence

import fire
import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["write_nfbs", "write_lits", "write_brats", "write_covidx", "write_prostate", "TASKS", "main"]

Grid = list[np.ndarray]


# ----------------------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------------------
def _rng(seed: int, case: int, stream: int = 0) -> np.random.Generator:
    """One independent generator per case, so a case is the same whatever else is generated."""
    return np.random.default_rng([int(seed), int(case), int(stream)])


def _jitter_shape(rng: np.random.Generator, base: Sequence[int], jitter: float = 0.15) -> tuple[int, ...]:
    """Vary the grid size per axis so that no two cases share a shape (as in real data)."""
    return tuple(max(8, int(round(b * rng.uniform(1 - jitter, 1 + jitter)))) for b in base)


def _affine(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS diagonal affine with the case's spacing and a non-zero, roughly centred origin."""
    spacing = np.asarray(spacing, dtype=float)
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = -(np.asarray(shape[:3]) - 1) / 2.0 * spacing + rng.uniform(-20.0, 20.0, 3)
    return aff


def _grid(shape: Sequence[int]) -> Grid:
    """Sparse normalised coordinates in [-1, 1] per axis: anatomy scales with the field of view."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    return list(np.meshgrid(*axes, indexing="ij", sparse=True))


def _blob(
    grid: Grid,
    center: Sequence[float],
    radii: Sequence[float],
    rng: np.random.Generator,
    wobble: float = 0.12,
    waves: int = 3,
) -> np.ndarray:
    """Normalised radius of a randomly dented ellipsoid (< 1 inside).

    The dents are low-frequency functions of direction only, so the shape is smooth and star-shaped
    and thresholds of one field (scalp > skull > CSF > brain) are nested shells that never cross.
    """
    d = [(g - c) / r for g, c, r in zip(grid, center, radii, strict=True)]
    rho = np.sqrt(sum(x * x for x in d))
    unit = [x / (rho + 1e-6) for x in d]
    pert = np.zeros_like(rho)
    for _ in range(waves):
        k = rng.normal(size=len(d))
        k /= np.linalg.norm(k) + 1e-12
        freq, phase, amp = rng.uniform(1.5, 3.0), rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.0)
        pert = pert + amp * np.sin(freq * sum(ki * ui for ki, ui in zip(k, unit, strict=True)) + phase)
    return (rho / (1.0 + wobble * pert / waves)).astype(np.float32)


def _smooth_noise(
    rng: np.random.Generator, shape: Sequence[int], sigma: float | Sequence[float]
) -> np.ndarray:
    """Unit-variance smooth random field: tissue texture, folds and patchy opacities."""
    field = ndimage.gaussian_filter(rng.standard_normal(tuple(shape), dtype=np.float32), sigma)
    return field / (field.std() + 1e-8)


def _bias(grid: Grid, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative shading like an MR coil's, so intensity alone is not a fixed threshold."""
    lin = sum(rng.normal() * g for g in grid)
    quad = sum(rng.normal() * g * g for g in grid)
    return np.exp(strength * (lin + 0.5 * quad) / np.sqrt(len(grid))).astype(np.float32)


def _rician(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude-MR noise: non-negative, biased upwards in dark areas as in real scans."""
    n1 = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    n2 = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.sqrt((img + n1) ** 2 + n2**2)


def _lookup(tissue: np.ndarray, values: Sequence[float]) -> np.ndarray:
    """Tissue-class map to intensities."""
    return np.asarray(values, dtype=np.float32)[tissue]


def _random_voxel(rng: np.random.Generator, mask: np.ndarray, grid: Grid) -> list[float]:
    """Normalised coordinates of a random voxel of ``mask`` (a lesion centre inside an organ)."""
    idx = np.flatnonzero(mask)
    pick = np.unravel_index(idx[rng.integers(len(idx))], mask.shape)
    return [float(g.reshape(-1)[p]) for g, p in zip(grid, pick, strict=True)]


def _min_radius(radii: np.ndarray, shape: Sequence[int], voxels: float) -> np.ndarray:
    """Keep a normalised radius at least ``voxels`` voxels wide so small grids keep every structure."""
    floor = voxels * 2.0 / (np.asarray(shape[: len(radii)], dtype=float) - 1)
    return np.maximum(radii, floor)


def _save_nifti(arr: np.ndarray, affine: np.ndarray, path: str) -> None:
    """Save with qform = sform = scanner and mm units, as scanner exports are."""
    img = nib.Nifti1Image(arr, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)


def _to_int16(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip(np.rint(img), lo, hi).astype(np.int16)


def _case_ids(cases: int) -> list[int]:
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    return list(range(int(cases)))


# ----------------------------------------------------------------------------------------------------------
# NFBS: T1 head with skull, skull-stripped T1, brain mask
# ----------------------------------------------------------------------------------------------------------
def _nfbs_case(
    rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One head: scalp (bright fat), dark skull, CSF, grey/white matter, ventricles, neck below."""
    shape = _jitter_shape(rng, (size, size, size))
    spacing = rng.uniform(0.8, 1.3, 3)
    affine = _affine(rng, shape, spacing)
    g = _grid(shape)
    x, y, z = g
    head_c = rng.uniform(-0.05, 0.05, 3) + [0, 0, 0.1]
    head = _blob(g, head_c, rng.uniform([0.78, 0.86, 0.74], [0.88, 0.95, 0.84]), rng, wobble=0.08)
    folds = _smooth_noise(rng, shape, sigma=max(1.0, size / 12))
    brain_rho = head / 0.76 + 0.03 * folds
    brain = (brain_rho < 1.0) & (head < 0.84)
    wm = brain & (brain_rho + 0.08 * _smooth_noise(rng, shape, sigma=max(1.0, size / 16)) < 0.74)
    vent = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        c = [side * rng.uniform(0.06, 0.1), rng.uniform(-0.05, 0.1), rng.uniform(0.05, 0.2)]
        vent |= _blob(g, c, rng.uniform([0.05, 0.18, 0.08], [0.08, 0.26, 0.12]), rng, wobble=0.15) < 1.0
    vent &= wm
    neck = (np.sqrt((x / 0.42) ** 2 + ((y + 0.1) / 0.48) ** 2) < 1.0) & (z < -0.55) & ~(head < 1.0)
    neck = np.broadcast_to(neck, shape)

    tissue = np.zeros(shape, dtype=np.int8)  # 0 air
    tissue[head < 1.0] = 1  # scalp and fat
    tissue[neck] = 1
    tissue[head < 0.93] = 2  # skull
    tissue[head < 0.86] = 3  # CSF
    tissue[brain] = 4  # grey matter
    tissue[wm] = 5  # white matter
    tissue[vent] = 3  # ventricles (CSF)
    t1 = _lookup(tissue, [0, 420, 70, 90, 260, 400])
    t1 = ndimage.gaussian_filter(t1, 0.7)
    t1 *= 1.0 + 0.05 * _smooth_noise(rng, shape, 1.0)
    t1 *= _bias(g, rng, 0.3) * rng.uniform(0.7, 1.4)
    t1 = _to_int16(_rician(rng, t1, 10.0), 0, 32767)
    brain_t1 = np.where(brain, t1, 0).astype(np.int16)
    return t1, brain_t1, brain.astype(np.uint8), affine


def write_nfbs(out: str, cases: int = 8, seed: int = 0, size: int = 48) -> str:
    """Write ``OUT/NFBS_Dataset/<ID>/sub-<ID>_ses-NFB3_T1w[_brain|_brainmask].nii.gz``; return the root.

    IDs look like the NKI Rockland ones (``A000`` + 5 digits) and are drawn from ``seed``.
    """
    root = os.path.join(out, "NFBS_Dataset")
    os.makedirs(root, exist_ok=True)
    numbers = np.sort(_rng(seed, 10**6).choice(90000, size=cases, replace=False) + 10000)
    for i in _case_ids(cases):
        sid = f"A000{numbers[i]:05d}"
        t1, brain, mask, affine = _nfbs_case(_rng(seed, i), size)
        folder = os.path.join(root, sid)
        os.makedirs(folder, exist_ok=True)
        stem = os.path.join(folder, f"sub-{sid}_ses-NFB3_T1w")
        _save_nifti(t1, affine, stem + ".nii.gz")
        _save_nifti(brain, affine, stem + "_brain.nii.gz")
        _save_nifti(mask, affine, stem + "_brainmask.nii.gz")
        print(f"[nfbs] {i + 1}/{cases} {sid} shape={t1.shape} brain={int(mask.sum())} vox", flush=True)
    return root


# ----------------------------------------------------------------------------------------------------------
# LiTS: abdominal CT in HU, liver (1) and tumours (2)
# ----------------------------------------------------------------------------------------------------------
def _lits_case(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Abdomen: fat, muscle wall, ribs, spine, aorta, kidneys, spleen, bowel and a right-sided liver."""
    shape = _jitter_shape(rng, (size, size, round(size * 0.9)))
    sxy = rng.uniform(0.7, 1.0)
    spacing = (sxy, sxy, rng.uniform(0.8, 2.0))
    affine = _affine(rng, shape, spacing)
    g = _grid(shape)
    x, y, z = g
    by = rng.uniform(-0.08, 0.0)
    body = _blob([x, y], [0.0, by], rng.uniform([0.88, 0.68], [0.96, 0.78]), rng, wobble=0.05)
    body = np.broadcast_to(body / (1.0 + 0.04 * z), shape)
    inside = body < 0.82
    spine_c = [0.0, by - rng.uniform(0.5, 0.56)]
    spine = np.broadcast_to(_blob([x, y], spine_c, [0.13, 0.12], rng, wobble=0.05), shape)
    angle = np.arctan2(y, x)
    ribs = (body >= 0.8) & (body < 0.88) & (np.sin(7 * angle + 4 * z + rng.uniform(0, 6.3)) > 0.55)
    aorta = np.broadcast_to(_blob([x, y], [0.08, spine_c[1] + 0.2], [0.06, 0.06], rng, wobble=0.0), shape) < 1
    kidneys = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        c = [side * rng.uniform(0.3, 0.38), spine_c[1] + 0.08, rng.uniform(-0.55, -0.3)]
        kidneys |= _blob(g, c, [0.11, 0.14, 0.35], rng, wobble=0.08) < 1.0
    spleen = _blob(g, [rng.uniform(0.5, 0.6), by - 0.25, rng.uniform(0.0, 0.3)], [0.16, 0.2, 0.3], rng) < 1.0
    bowel = _smooth_noise(rng, shape, sigma=max(1.0, size / 16))

    liver_c = [rng.uniform(-0.42, -0.3), by + rng.uniform(-0.05, 0.08), rng.uniform(-0.05, 0.25)]
    liver_r = rng.uniform([0.4, 0.42, 0.55], [0.5, 0.52, 0.75])
    # a thin fat plane (body 0.78-0.82) separates the liver from the muscle wall, as it usually does
    liver = (_blob(g, liver_c, liver_r, rng, wobble=0.2, waves=4) < 1.0) & (body < 0.78) & ~(spine < 1.25)
    tumour = np.zeros(shape, dtype=bool)
    inner = ndimage.binary_erosion(liver)  # tumours stay inside the liver, wrapped by at least one voxel
    core = ndimage.binary_erosion(inner, iterations=2)
    for _ in range(int(rng.integers(0, 3))):
        if not core.any():
            break
        c = _random_voxel(rng, core, g)
        r = _min_radius(np.full(3, rng.uniform(0.1, 0.2)), shape, 2.0)
        tumour |= (_blob(g, c, r, rng, wobble=0.15) < 1.0) & inner

    tissue = np.zeros(shape, dtype=np.int8)  # 0 air
    tissue[body < 1.0] = 1  # subcutaneous fat
    tissue[body < 0.9] = 2  # muscle wall
    tissue[inside] = 3  # visceral fat
    tissue[inside & (bowel > 0.5)] = 4  # bowel and its contents
    tissue[inside & (bowel > 2.2)] = 5  # gas pocket
    tissue[ribs] = 6  # rib bone
    tissue[spine < 1.0] = 7  # vertebral cortex
    tissue[spine < 0.75] = 8  # cancellous bone
    tissue[aorta & inside] = 9  # contrast-filled aorta
    tissue[kidneys & inside] = 9
    tissue[spleen & inside] = 10
    tissue[liver] = 11
    tissue[tumour] = 12
    hu = [-1000, -100, 35, -85, 5, -800, 650, 950, 280, 160, 45, rng.uniform(52, 68), rng.uniform(10, 30)]
    ct = _lookup(tissue, hu)
    ct = ndimage.gaussian_filter(ct, 0.6)
    ct += np.where(liver, 4.0 * _smooth_noise(rng, shape, 1.5), 0.0).astype(np.float32)
    ct += ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32) * 22.0, 0.5)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[liver] = 1
    seg[tumour] = 2
    return _to_int16(ct, -1024, 3071), seg, affine


def write_lits(out: str, cases: int = 8, seed: int = 0, size: int = 48) -> str:
    """Write ``OUT/volume-N.nii`` (CT, int16 HU) and ``OUT/segmentation-N.nii`` (uint8 0/1/2); return OUT."""
    os.makedirs(out, exist_ok=True)
    for i in _case_ids(cases):
        ct, seg, affine = _lits_case(_rng(seed, i), size)
        _save_nifti(ct, affine, os.path.join(out, f"volume-{i}.nii"))
        _save_nifti(seg, affine, os.path.join(out, f"segmentation-{i}.nii"))
        n_t = int((seg == 2).sum())
        print(f"[lits] {i + 1}/{cases} volume-{i} shape={ct.shape} liver={int((seg > 0).sum())} "
              f"tumour={n_t} vox", flush=True)
    return out


# ----------------------------------------------------------------------------------------------------------
# BraTS 2020: skull-stripped flair/t1/t1ce/t2 and seg {0, 1 NCR, 2 ED, 4 ET}
# ----------------------------------------------------------------------------------------------------------
BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")
# tissue classes: 0 background, 1 CSF, 2 grey matter, 3 white matter, 4 edema, 5 enhancing, 6 necrosis
_BRATS_LUT = {
    "flair": [0, 60, 400, 320, 820, 600, 300],
    "t1": [0, 110, 360, 500, 280, 320, 150],
    "t1ce": [0, 120, 380, 520, 300, 1150, 160],
    "t2": [0, 950, 520, 330, 820, 620, 1000],
}


def _brats_case(rng: np.random.Generator, size: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A skull-stripped brain with a glioma: necrosis inside an enhancing rim inside edema."""
    shape = _jitter_shape(rng, (size, size, size))
    spacing = rng.uniform(0.8, 1.3, 3)
    affine = _affine(rng, shape, spacing)
    g = _grid(shape)
    head = _blob(g, rng.uniform(-0.05, 0.05, 3), rng.uniform([0.72, 0.82, 0.7], [0.82, 0.92, 0.8]), rng, 0.08)
    folds = _smooth_noise(rng, shape, sigma=max(1.0, size / 14))
    brain = head < 1.0
    wm = brain & (head + 0.08 * folds < 0.72)
    csf = brain & (head > 0.9) & (folds > 0.6)
    for side in (-1, 1):
        c = [side * rng.uniform(0.06, 0.1), rng.uniform(-0.05, 0.1), rng.uniform(0.0, 0.15)]
        csf |= (_blob(g, c, rng.uniform([0.05, 0.18, 0.08], [0.08, 0.26, 0.12]), rng, wobble=0.15) < 1) & wm

    center = np.asarray(_random_voxel(rng, head < 0.5, g))
    r_ed = _min_radius(rng.uniform(0.3, 0.45, 3), shape, 5)
    r_core = _min_radius(r_ed * rng.uniform(0.45, 0.6), shape, 3)
    r_nec = _min_radius(r_core * rng.uniform(0.4, 0.6), shape, 1.5)
    edema = (_blob(g, center, r_ed, rng, wobble=0.3, waves=4) < 1.0) & brain
    core_c = center + rng.uniform(-0.25, 0.25, 3) * (r_ed - r_core)
    core = (_blob(g, core_c, r_core, rng, wobble=0.2) < 1.0) & ndimage.binary_erosion(edema, iterations=2)
    necrosis = (_blob(g, core_c, r_nec, rng, wobble=0.1) < 1.0) & ndimage.binary_erosion(core, iterations=1)

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

    texture = 1.0 + 0.05 * _smooth_noise(rng, shape, 1.0)
    images = {}
    for mod in BRATS_MODALITIES:
        img = ndimage.gaussian_filter(_lookup(tissue, _BRATS_LUT[mod]), 0.7) * texture
        img *= _bias(g, rng, 0.25) * rng.uniform(0.7, 1.4)
        img = _rician(rng, img, 0.02 * float(img.max()))
        images[mod] = np.where(brain, np.clip(np.rint(img), 1, 32767), 0).astype(np.int16)
    return images, seg, affine


def write_brats(out: str, cases: int = 8, seed: int = 0, size: int = 48, ids: list[int] | None = None) -> str:
    """Write ``OUT/MICCAI_BraTS2020_TrainingData/BraTS20_Training_NNN/BraTS20_Training_NNN_{mod}.nii``.

    Case numbers are 1..cases, or ``ids`` when given (then ``cases`` is ignored). Case 355's mask gets the
    real release's odd name ``W39_1998.09.19_Segm.nii`` so loaders' aliasing is exercised. A
    ``name_mapping.csv`` sits beside the case folders as in the real release. Returns the training folder.
    """
    if ids is None:
        numbers = [i + 1 for i in _case_ids(cases)]
    else:
        numbers = [int(n) for n in ([ids] if isinstance(ids, int) else ids)]
        if not numbers or len(set(numbers)) != len(numbers) or min(numbers) < 0:
            raise ValueError(f"ids must be distinct non-negative case numbers, got {ids}")
    root = os.path.join(out, "MICCAI_BraTS2020_TrainingData")
    os.makedirs(root, exist_ok=True)
    rows = []
    for k, n in enumerate(numbers):
        name = f"BraTS20_Training_{n:03d}"
        images, seg, affine = _brats_case(_rng(seed, n), size)
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for mod, img in images.items():
            _save_nifti(img, affine, os.path.join(folder, f"{name}_{mod}.nii"))
        seg_name = "W39_1998.09.19_Segm.nii" if n == 355 else f"{name}_seg.nii"
        _save_nifti(seg, affine, os.path.join(folder, seg_name))
        rows.append(f"HGG,NA,NA,NA,NA,{name}")
        print(f"[brats] {k + 1}/{len(numbers)} {name} shape={seg.shape} "
              f"tumour={int((seg > 0).sum())} vox mask={seg_name}", flush=True)
    header = "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,BraTS_2019_subject_ID," \
             "BraTS_2020_subject_ID"
    with open(os.path.join(root, "name_mapping.csv"), "w") as f:
        f.write("\n".join([header, *rows]) + "\n")
    return root


# ----------------------------------------------------------------------------------------------------------
# COVIDx V8B: chest X-rays, positive/negative, train/test split files
# ----------------------------------------------------------------------------------------------------------
def _chest_xray(rng: np.random.Generator, h: int, w: int, positive: bool) -> tuple[np.ndarray, np.ndarray]:
    """A PA chest film (uint8) and its lung mask; positives get bilateral patchy lower-zone opacities.

    All random draws are made in the same order for both classes, so one seed gives the same film with
    and without opacities (the tests use this to check that the class signal is there).
    """
    gain, offset, gamma = rng.uniform(0.8, 1.15), rng.uniform(-15, 15), rng.uniform(0.8, 1.25)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-1, 1, w, dtype=np.float32),
                         indexing="ij", sparse=True)
    g = [yy, xx]
    thorax = _blob(g, [rng.uniform(0.1, 0.25), rng.uniform(-0.04, 0.04)], rng.uniform([1.0, 0.8], [1.1, 0.9]),
                   rng, wobble=0.05)
    lungs = np.zeros((h, w), dtype=bool)
    for side in (-1, 1):
        c = [rng.uniform(-0.1, 0.0), side * rng.uniform(0.38, 0.46)]
        lung = _blob(g, c, rng.uniform([0.5, 0.22], [0.6, 0.3]), rng, wobble=0.08) < 1.0
        dome = rng.uniform(0.38, 0.5) - 0.35 * ((xx - c[1]) / 0.3) ** 2
        lungs |= lung & (yy < dome)
    heart_c = [rng.uniform(0.22, 0.32), rng.uniform(0.08, 0.16)]
    heart = _blob(g, heart_c, rng.uniform([0.24, 0.22], [0.3, 0.28]), rng, wobble=0.06) < 1.0
    spine = np.broadcast_to(np.abs(xx) < rng.uniform(0.07, 0.1), (h, w))
    ribs = np.sin(2 * np.pi * (rng.uniform(5, 7) * yy - 0.8 * np.abs(xx) + 1.5 * xx**2) + rng.uniform(0, 6.3)) > 0.5
    vessels = _smooth_noise(rng, (h, w), sigma=max(1.0, min(h, w) / 80))
    opac_field = _smooth_noise(rng, (h, w), sigma=max(2.0, min(h, w) / 20))

    img = np.full((h, w), 15.0, dtype=np.float32)
    img[thorax < 1.0] = 150.0
    img[(thorax < 1.0) & (yy > 0.45)] = 170.0  # abdomen under the diaphragm
    img[lungs] = 55.0 + 8.0 * vessels[lungs]
    img[(thorax < 1.0) & ribs] += 8.0
    img[lungs & ribs] += 18.0  # ribs show mostly against the dark lungs
    img[heart] = 175.0
    img[spine & (thorax < 1.0)] = 190.0
    if positive:
        cx = np.abs(xx)
        weight = opac_field + 1.2 * (yy + 0.2) + 1.0 * (cx - 0.4)
        opac = np.zeros((h, w), dtype=np.float32)
        for side in (xx < 0, xx >= 0):  # threshold per lung so that opacities are bilateral
            zone = lungs & side & ~heart
            if zone.any():
                thr = np.quantile(weight[zone], 0.45)
                opac[zone] = 1.0 / (1.0 + np.exp(-(weight[zone] - thr) / 0.25))
        img += 75.0 * ndimage.gaussian_filter(opac, max(1.0, min(h, w) / 100))
    img = ndimage.gaussian_filter(img, max(0.8, min(h, w) / 200))
    img = 255.0 * np.clip(img * gain + offset, 0, 255) / 255.0
    img = 255.0 * (img / 255.0) ** gamma
    img += rng.standard_normal((h, w), dtype=np.float32) * 4.0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), lungs


_COVIDX_EXTS = (".png", ".png", ".jpg", ".png", ".PNG", ".png", ".jpeg", ".png", ".jpg", ".png")


def _covidx_names(rng: np.random.Generator, i: int, positive: bool, ext: str) -> tuple[str, str, str]:
    """(patient_id, file name, source) in the style of each COVIDx source."""
    sources = ("ricord", "cohen", "actmed") if positive else ("rsna", "cohen", "actmed")
    source = str(rng.choice(sources, p=(0.5, 0.3, 0.2) if positive else (0.6, 0.2, 0.2)))
    if source == "ricord":
        pid = f"{rng.integers(100000, 999999)}-{i:06d}"
        return pid, f"MIDRC-RICORD-1C-{pid}-{rng.integers(10000, 99999)}-0{ext}", source
    if source == "rsna":
        hexs = "".join(f"{b:02x}" for b in rng.integers(0, 256, 16))
        pid = f"{hexs[:8]}-{hexs[8:12]}-{hexs[12:16]}-{hexs[16:20]}-{hexs[20:]}"
        return pid, pid + ext, source
    if source == "cohen":
        pid = f"{1000 + i}" + ("b" if rng.random() < 0.3 else "")
        stem = f"covid-19-pneumonia-{i}-PA" if positive else f"ARDS-{i}-AP"
        return pid, stem + ext, source
    return f"ANON{100 + i}", f"CR.1.2.840.113564.{rng.integers(10**9, 10**10)}.{i}{ext}", source


def write_covidx(out: str, cases: int = 20, seed: int = 0, size: int = 256) -> str:
    """Write COVIDx V8B-style ``OUT/{train,test}/<image>`` and ``OUT/{train,test}_COVIDx8B.txt``; return OUT.

    ``cases`` is the number of images: half positive (rounded down), about 20 % (stratified) in test.
    Image sides vary in [0.8, 1.25] x ``size``; extensions mix .png/.jpg/.jpeg/.PNG and modes L/RGB so
    loaders must normalise them. Split lines are ``<patient_id> <filename> <positive|negative> <source>``.
    """
    numbers = _case_ids(cases)
    rng = _rng(seed, 10**6)
    labels = np.zeros(cases, dtype=bool)
    labels[rng.permutation(cases)[: cases // 2]] = True
    n_test = int(round(0.2 * cases)) if cases >= 2 else 0
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    n_test_pos = min(len(pos), n_test // 2 + (n_test % 2 if len(pos) > len(neg) else 0))
    test = set(rng.permutation(pos)[:n_test_pos].tolist())
    test |= set(rng.permutation(neg)[: n_test - n_test_pos].tolist())
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for split in lines:
        os.makedirs(os.path.join(out, split), exist_ok=True)
    for i in numbers:
        crng = _rng(seed, i)
        ext = _COVIDX_EXTS[i % len(_COVIDX_EXTS)]
        positive = bool(labels[i])
        pid, fname, source = _covidx_names(crng, i, positive, ext)
        h, w = (int(round(size * crng.uniform(0.8, 1.25))) for _ in range(2))
        img, _ = _chest_xray(crng, h, w, positive)
        pil = Image.fromarray(img)  # 2D uint8 -> mode "L"
        if i % 3 == 1:
            pil = pil.convert("RGB")
        split = "test" if i in test else "train"
        path = os.path.join(out, split, fname)
        if ext.lower() in (".jpg", ".jpeg"):
            pil.save(path, format="JPEG", quality=92)
        else:
            pil.save(path, format="PNG")
        label = "positive" if positive else "negative"
        lines[split].append(f"{pid} {fname} {label} {source}")
        print(f"[covidx] {i + 1}/{cases} {split}/{fname} {label} {pil.mode} {w}x{h}", flush=True)
    for split, rows in lines.items():
        with open(os.path.join(out, f"{split}_COVIDx8B.txt"), "w") as f:
            f.write("".join(r + "\n" for r in rows))
    return out


# ----------------------------------------------------------------------------------------------------------
# MSD Task05 prostate: 4D channel-last (T2, ADC), labels 1 PZ / 2 TZ
# ----------------------------------------------------------------------------------------------------------
def _prostate_case(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pelvis slab: fat, muscles, bones, rectum, prostate with a dark capsule, bright PZ and darker TZ."""
    nxy = max(8, int(round(size * rng.uniform(0.85, 1.15))))
    nz = max(4, int(round(rng.integers(12, 21) * size / 64)))
    shape = (nxy, nxy, nz)
    sxy = rng.uniform(0.5, 0.75)
    affine = _affine(rng, shape, (sxy, sxy, rng.uniform(3.0, 4.0)))
    g = _grid(shape)
    x, y, z = g
    body = np.broadcast_to(_blob([x, y], [0.0, 0.0], rng.uniform([1.0, 0.9], [1.1, 1.0]), rng, 0.04), shape)
    muscle = np.zeros(shape, dtype=bool)
    femur = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        muscle |= _blob([x, y], [side * rng.uniform(0.5, 0.6), 0.0], [0.14, 0.35], rng, 0.1) < 1.0
        femur |= _blob([x, y], [side * rng.uniform(0.82, 0.9), 0.1], [0.2, 0.22], rng, 0.05) < 1.0
    pubis = _blob([x, y], [0.0, rng.uniform(0.55, 0.65)], [0.25, 0.12], rng, 0.1) < 1.0
    rectum = np.broadcast_to(_blob([x, y], [0.0, rng.uniform(-0.55, -0.5)], [0.18, 0.14], rng, 0.1), shape)

    pc = [rng.uniform(-0.05, 0.05), rng.uniform(-0.08, 0.0), rng.uniform(-0.15, 0.15)]
    pr = rng.uniform([0.3, 0.24, 0.5], [0.38, 0.3, 0.7])  # apex and base slices stay free of gland
    pr[:2] = _min_radius(pr[:2], shape, 2.5)
    prost = _blob(g, pc, pr, rng, wobble=0.1)
    tc = [pc[0], pc[1] + 0.3 * pr[1], pc[2] + 0.1 * pr[2]]
    tz = (_blob(g, tc, pr * rng.uniform(0.55, 0.65), rng, wobble=0.12) < 1.0) & (prost < 0.85)
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
    texture = _smooth_noise(rng, shape, (1.5, 1.5, 0.5))
    t2 = _lookup(tissue, [0, 560, 210, 430, 150, 220, 70, 170, 760, 380])
    t2 *= 1.0 + np.where(tz, 0.15, 0.06) * texture
    t2 = ndimage.gaussian_filter(t2, (0.7, 0.7, 0.3)) * _bias(g, rng, 0.35) * rng.uniform(0.6, 1.6)
    t2 = _rician(rng, t2, 14.0)
    adc = _lookup(tissue, [0, 250, 1350, 450, 500, 1100, 300, 900, 1700, 1200])
    adc = ndimage.gaussian_filter(adc, (0.8, 0.8, 0.3))
    adc = np.clip(adc + rng.standard_normal(shape, dtype=np.float32) * 110.0, 0, None)
    image = np.stack([t2, adc], axis=-1).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    label[gland] = 1
    label[tz] = 2
    return image, label, affine


_APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4070)


def write_prostate(out: str, cases: int = 8, seed: int = 0, size: int = 64) -> str:
    """Write MSD ``OUT/Task05_Prostate/{dataset.json,imagesTr,labelsTr,imagesTs}``; return that folder.

    ``cases`` training cases plus ``max(1, cases // 2)`` test images, numbered ``prostate_NN`` from one
    shuffled range (train and test interleave as in the real set; 00 is always a training case). Images
    are 4D channel-last (T2, ADC); a macOS ``._prostate_00.nii.gz`` junk file is written into imagesTr.
    """
    _case_ids(cases)
    n_test = max(1, int(cases) // 2)
    total = int(cases) + n_test
    width = max(2, len(str(total - 1)))
    order = _rng(seed, 10**6).permutation(np.arange(1, total)).tolist()
    train_ids = [0, *order[: cases - 1]]
    test_ids = sorted(order[cases - 1 :])
    root = os.path.join(out, "Task05_Prostate")
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    training, test = [], []
    for k, n in enumerate(sorted(train_ids) + test_ids):
        name = f"prostate_{n:0{width}d}.nii.gz"
        image, label, affine = _prostate_case(_rng(seed, n), size)
        if n in test_ids:
            _save_nifti(image, affine, os.path.join(root, "imagesTs", name))
            test.append(f"./imagesTs/{name}")
            kind = "Ts"
        else:
            _save_nifti(image, affine, os.path.join(root, "imagesTr", name))
            _save_nifti(label, affine, os.path.join(root, "labelsTr", name))
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


TASKS = {
    "nfbs": write_nfbs,
    "lits": write_lits,
    "brats": write_brats,
    "covidx": write_covidx,
    "prostate": write_prostate,
}


def main() -> None:
    """``python -m common.data.lookalike <task> --out DIR --cases N [--seed S] [--size S]``."""
    fire.Fire(TASKS)


if __name__ == "__main__":
    main()
