"""NFBS, the Neurofeedback Skull-stripped repository: T1w head MR with brain masks (skull stripping).

- :func:`build_datalist`: the data list of a user's ``NFBS_Dataset`` download (subject IDs are only known
  there).
- :func:`write_lookalike`: a small synthetic NFBS in the real layout (a head with scalp, skull, CSF, grey
  and white matter, ventricles and neck; the skull-stripped T1 and the brain mask beside it), optionally
  ``hard`` (gyri, thin CSF, muscle and dura with grey-matter intensity, partial-volume edges).
"""

from __future__ import annotations

import os

import numpy as np
from scipy import ndimage

from common.data.datalists import (
    NUM_FOLDS,
    SEED,
    assign_folds,
    datalist_header,
    dataset_root,
    finish_datalist,
)
from common.data.synthetic import (
    bias_field,
    blob,
    case_ids,
    case_rng,
    coordinate_grid,
    jitter_shape,
    lookup,
    random_affine,
    rician_noise,
    save_nifti,
    smooth_noise,
    to_int16,
)
from common.errors import MissingInputError

__all__ = ["COMMITTED_LIST", "build_datalist", "write_lookalike"]

#: The list is built from the user's download (see ``common.datasets``); nothing is committed.
COMMITTED_LIST = None


# --------------------------------------------------------------------------------------- data list
def build_datalist(dataset_dir: str, out: str | None = None) -> dict:
    """List the subjects of a user's ``NFBS_Dataset`` folder (IDs are only known from the download)."""
    root = dataset_root(dataset_dir, "NFBS_Dataset")
    subjects = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subjects:
        raise MissingInputError(f"NFBS_Dataset folder {root} contains no subject folders.")
    training = []
    folds = assign_folds(subjects)
    for sid in subjects:
        image = f"sub-{sid}_ses-NFB3_T1w.nii.gz"
        label = f"sub-{sid}_ses-NFB3_T1w_brainmask.nii.gz"
        for fname in (image, label):
            if not (root / sid / fname).is_file():
                raise MissingInputError(f"NFBS subject folder {root / sid} is missing the file {fname}.")
        training.append({"image": f"{sid}/{image}", "label": f"{sid}/{label}", "fold": folds[sid]})
    datalist = datalist_header(
        "NFBS",
        f"Neurofeedback Skull-stripped repository, {len(subjects)} T1w MR subjects with brain masks. "
        f"Paths are relative to the NFBS_Dataset folder. Folds: {NUM_FOLDS}, seed {SEED}.",
        {"0": "background", "1": "brain"},
        {"0": "T1w"},
    )
    datalist["training"] = training
    datalist["testing"] = []
    return finish_datalist(datalist, out)


# ---------------------------------------------------------------------------------------- look-alike
def _case(rng: np.random.Generator, size: int, hard: bool = False
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One head: scalp (bright fat), dark skull, CSF, grey/white matter, ventricles, neck below.

    ``hard`` makes what separates brain from non-brain in real T1 scans scarce: a convoluted cortical outline
    (gyri) with dark sulcal lines inside the mask, a thin CSF rim, temporal muscle and dura with grey-matter
    intensity just outside it, skull and CSF brighter (closer to grey matter), more blur (partial-volume
    edges), noise and coil shading. Its extra random draws are made only when it is set, so the default
    data stay as they were.
    """
    shape = jitter_shape(rng, (size, size, size))
    spacing = rng.uniform(0.8, 1.3, 3)
    affine = random_affine(rng, shape, spacing)
    g = coordinate_grid(shape)
    x, y, z = g
    head_c = rng.uniform(-0.05, 0.05, 3) + [0, 0, 0.1]
    head = blob(g, head_c, rng.uniform([0.78, 0.86, 0.74], [0.88, 0.95, 0.84]), rng, wobble=0.08)
    folds = smooth_noise(rng, shape, sigma=max(1.0, size / 12))
    brain_rho = head / 0.76 + 0.03 * folds
    brain = (brain_rho < 1.0) & (head < 0.84)
    if hard:  # extra draws only here: the default stream below is unchanged
        gyri = smooth_noise(rng, shape, sigma=max(1.0, size / 40))
        sulci = smooth_noise(rng, shape, sigma=max(1.0, size / 28))
        muscle = smooth_noise(rng, shape, sigma=max(1.0, size / 10))
        rim = np.clip(smooth_noise(rng, shape, sigma=max(1.0, size / 8)), -1.0, 1.0)
        brain_rho = head / (0.825 + 0.03 * rim) + 0.02 * folds + 0.045 * gyri  # CSF rim thin, in places gone
        brain = (brain_rho < 1.0) & (head < 0.855)
    wm = brain & (brain_rho + 0.08 * smooth_noise(rng, shape, sigma=max(1.0, size / 16)) < 0.74)
    vent = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        c = [side * rng.uniform(0.06, 0.1), rng.uniform(-0.05, 0.1), rng.uniform(0.05, 0.2)]
        vent |= blob(g, c, rng.uniform([0.05, 0.18, 0.08], [0.08, 0.26, 0.12]), rng, wobble=0.15) < 1.0
    vent &= wm
    neck = (np.sqrt((x / 0.42) ** 2 + ((y + 0.1) / 0.48) ** 2) < 1.0) & (z < -0.55) & ~(head < 1.0)
    neck = np.broadcast_to(neck, shape)

    tissue = np.zeros(shape, dtype=np.int8)  # 0 air
    tissue[head < 1.0] = 1  # scalp and fat
    tissue[neck] = 1
    tissue[head < 0.93] = 2  # skull
    tissue[head < 0.86] = 3  # CSF
    if hard:
        tissue[(head < 0.95) & (head >= 0.86) & (muscle > -0.3)] = 6  # temporal muscle, dura, sinuses
    tissue[brain] = 4  # grey matter
    tissue[wm] = 5  # white matter
    tissue[vent] = 3  # ventricles (CSF)
    if hard:
        tissue[brain & ~wm & (np.abs(sulci) < 0.12) & (brain_rho > 0.8)] = 3  # sulcal CSF, inside the mask
        t1 = lookup(tissue, [0, 380, 130, 150, 250, 360, 235])
        t1 = ndimage.gaussian_filter(t1, 1.1)
    else:
        t1 = lookup(tissue, [0, 420, 70, 90, 260, 400])
        t1 = ndimage.gaussian_filter(t1, 0.7)
    t1 *= 1.0 + 0.05 * smooth_noise(rng, shape, 1.0)
    t1 *= bias_field(g, rng, 0.5 if hard else 0.3) * rng.uniform(0.7, 1.4)
    t1 = to_int16(rician_noise(rng, t1, 22.0 if hard else 10.0), 0, 32767)
    brain_t1 = np.where(brain, t1, 0).astype(np.int16)
    return t1, brain_t1, brain.astype(np.uint8), affine


def write_lookalike(out: str, cases: int = 8, seed: int = 0, size: int = 48, hard: bool = False) -> str:
    """Write ``OUT/NFBS_Dataset/<ID>/sub-<ID>_ses-NFB3_T1w[_brain|_brainmask].nii.gz``; return the root.

    IDs look like the NKI Rockland ones (``A000`` + 5 digits) and are drawn from ``seed``. ``hard``: heads
    whose brain outline is harder to find (see :func:`_case`), for telling training recipes apart.
    """
    root = os.path.join(out, "NFBS_Dataset")
    os.makedirs(root, exist_ok=True)
    numbers = np.sort(case_rng(seed, 10**6).choice(90000, size=cases, replace=False) + 10000)
    for i in case_ids(cases):
        sid = f"A000{numbers[i]:05d}"
        t1, brain, mask, affine = _case(case_rng(seed, i), size, hard)
        folder = os.path.join(root, sid)
        os.makedirs(folder, exist_ok=True)
        stem = os.path.join(folder, f"sub-{sid}_ses-NFB3_T1w")
        save_nifti(t1, affine, stem + ".nii.gz")
        save_nifti(brain, affine, stem + "_brain.nii.gz")
        save_nifti(mask, affine, stem + "_brainmask.nii.gz")
        print(f"[nfbs] {i + 1}/{cases} {sid} shape={t1.shape} brain={int(mask.sum())} vox", flush=True)
    return root
