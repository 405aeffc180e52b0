"""LiTS 2017, the Liver Tumor Segmentation challenge: abdominal CT with liver (1) and tumour (2) labels.

- :func:`build_datalist`: the canonical training list, fixed by the release's file names, committed as
  ``data_lists/lits.json``.
- :func:`write_lookalike`: a small synthetic LiTS in the real layout (abdomen CTs in HU with fat, muscle,
  ribs, spine, aorta, kidneys, spleen, bowel and a right-sided liver holding 0 to 2 tumours).
"""

from __future__ import annotations

import os

import numpy as np
from scipy import ndimage

from common.data.datalists import NUM_FOLDS, SEED, assign_folds, datalist_header, finish_datalist
from common.data.synthetic import (
    blob,
    case_ids,
    case_rng,
    coordinate_grid,
    jitter_shape,
    lookup,
    min_radius,
    random_affine,
    random_voxel,
    save_nifti,
    smooth_noise,
    to_int16,
)

__all__ = ["COMMITTED_LIST", "build_datalist", "write_lookalike"]

#: File name of the committed list under ``data_lists/`` (see ``common.datasets.write_all``).
COMMITTED_LIST = "lits.json"


# --------------------------------------------------------------------------------------- data list
def build_datalist(out: str | None = None, suffix: str = ".nii") -> dict:
    """Canonical LiTS 2017 training list: ``volume-N.nii`` / ``segmentation-N.nii``, N = 0..130."""
    cases = list(range(131))
    folds = assign_folds(cases)
    datalist = datalist_header(
        "LiTS 2017",
        "Liver Tumor Segmentation challenge 2017, 131 training CT volumes. Paths are relative to one folder "
        "holding all volume-N.nii and segmentation-N.nii files: merge the download's 'Training Batch 1' and "
        "'Training Batch 2' folders into that one folder. Test volumes have no public labels and are not "
        f"listed. Folds: {NUM_FOLDS}, seed {SEED}.",
        {"0": "background", "1": "liver", "2": "tumour"},
        {"0": "CT"},
    )
    datalist["training"] = [
        {"image": f"volume-{n}{suffix}", "label": f"segmentation-{n}{suffix}", "fold": folds[n]}
        for n in cases
    ]
    datalist["testing"] = []
    return finish_datalist(datalist, out)


# ---------------------------------------------------------------------------------------- look-alike
def _case(rng: np.random.Generator, size: int, hard: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Abdomen: fat, muscle wall, ribs, spine, aorta, kidneys, spleen, bowel and a right-sided liver.

    ``hard`` removes what makes the liver easy to find in this look-alike and is often missing in real portal-
    venous CT: the liver touches the muscle wall (no fat plane), a stomach and the spleen lie against it with
    nearly its density, muscle is closer to it too, edges are more blurred and the noise is higher. Its extra
    random draws are made only when it is set, so the default data stay as they were.
    """
    shape = jitter_shape(rng, (size, size, round(size * 0.9)))
    sxy = rng.uniform(0.7, 1.0)
    spacing = (sxy, sxy, rng.uniform(0.8, 2.0))
    affine = random_affine(rng, shape, spacing)
    g = coordinate_grid(shape)
    x, y, z = g
    by = rng.uniform(-0.08, 0.0)
    body = blob([x, y], [0.0, by], rng.uniform([0.88, 0.68], [0.96, 0.78]), rng, wobble=0.05)
    body = np.broadcast_to(body / (1.0 + 0.04 * z), shape)
    inside = body < 0.82
    spine_c = [0.0, by - rng.uniform(0.5, 0.56)]
    spine = np.broadcast_to(blob([x, y], spine_c, [0.13, 0.12], rng, wobble=0.05), shape)
    angle = np.arctan2(y, x)
    ribs = (body >= 0.8) & (body < 0.88) & (np.sin(7 * angle + 4 * z + rng.uniform(0, 6.3)) > 0.55)
    aorta = np.broadcast_to(blob([x, y], [0.08, spine_c[1] + 0.2], [0.06, 0.06], rng, wobble=0.0), shape) < 1
    kidneys = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        c = [side * rng.uniform(0.3, 0.38), spine_c[1] + 0.08, rng.uniform(-0.55, -0.3)]
        kidneys |= blob(g, c, [0.11, 0.14, 0.35], rng, wobble=0.08) < 1.0
    spleen = blob(g, [rng.uniform(0.5, 0.6), by - 0.25, rng.uniform(0.0, 0.3)], [0.16, 0.2, 0.3], rng) < 1.0
    bowel = smooth_noise(rng, shape, sigma=max(1.0, size / 16))

    liver_c = [rng.uniform(-0.42, -0.3), by + rng.uniform(-0.05, 0.08), rng.uniform(-0.05, 0.25)]
    liver_r = rng.uniform([0.4, 0.42, 0.55], [0.5, 0.52, 0.75])
    # a thin fat plane (body 0.78-0.82) separates the liver from the muscle wall, as it usually does
    liver = (blob(g, liver_c, liver_r, rng, wobble=0.2, waves=4) < 1.0) & (body < (0.84 if hard else 0.78))
    liver &= ~(spine < 1.25)
    stomach = np.zeros(shape, dtype=bool)
    if hard:  # against the liver's left lobe, partly overlapped by it
        c = [liver_c[0] + liver_r[0] * rng.uniform(0.7, 0.9), by + rng.uniform(0.0, 0.15), liver_c[2]]
        stomach = (blob(g, c, rng.uniform([0.2, 0.2, 0.25], [0.28, 0.26, 0.35]), rng) < 1.0) & ~liver
    tumour = np.zeros(shape, dtype=bool)
    inner = ndimage.binary_erosion(liver)  # tumours stay inside the liver, wrapped by at least one voxel
    core = ndimage.binary_erosion(inner, iterations=2)
    for _ in range(int(rng.integers(0, 3))):
        if not core.any():
            break
        c = random_voxel(rng, core, g)
        r = min_radius(np.full(3, rng.uniform(0.1, 0.2)), shape, 2.0)
        tumour |= (blob(g, c, r, rng, wobble=0.15) < 1.0) & inner

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
    tissue[stomach & inside] = 13
    hu = [-1000, -100, 35, -85, 5, -800, 650, 950, 280, 160, 45, rng.uniform(52, 68), rng.uniform(10, 30)]
    if hard:
        hu[2], hu[10] = 48.0, hu[11] - rng.uniform(2, 8)  # muscle and spleen close to the liver
    ct = lookup(tissue, [*hu, hu[11] - rng.uniform(5, 12) if hard else 0.0])
    ct = ndimage.gaussian_filter(ct, 1.0 if hard else 0.6)
    ct += np.where(liver, 4.0 * smooth_noise(rng, shape, 1.5), 0.0).astype(np.float32)
    ct += ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32) * (34.0 if hard else 22.0), 0.5)
    seg = np.zeros(shape, dtype=np.uint8)
    seg[liver] = 1
    seg[tumour] = 2
    return to_int16(ct, -1024, 3071), seg, affine


def write_lookalike(out: str, cases: int = 8, seed: int = 0, size: int = 48, hard: bool = False) -> str:
    """Write ``OUT/volume-N.nii`` (CT, int16 HU) and ``OUT/segmentation-N.nii`` (uint8 0/1/2); return OUT.

    ``hard``: abdomens whose liver is harder to tell from its neighbours (see :func:`_case`).
    """
    os.makedirs(out, exist_ok=True)
    for i in case_ids(cases):
        ct, seg, affine = _case(case_rng(seed, i), size, hard)
        save_nifti(ct, affine, os.path.join(out, f"volume-{i}.nii"))
        save_nifti(seg, affine, os.path.join(out, f"segmentation-{i}.nii"))
        n_t = int((seg == 2).sum())
        print(f"[lits] {i + 1}/{cases} volume-{i} shape={ct.shape} liver={int((seg > 0).sum())} "
              f"tumour={n_t} vox", flush=True)
    return out
