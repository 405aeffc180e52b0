"""Primitives for synthetic ("look-alike") medical images, shared by the per-dataset writers.

Why look-alikes: NFBS, LiTS, BraTS 2020, COVIDx V8B and MSD Task05 cannot be downloaded in CI, here or on
a new user's laptop, yet the bundles' data lists, loaders, resampling and training loops must run on files
that look like the real thing. Each ``common.datasets.<name>.write_lookalike`` builds its dataset's anatomy
from these pieces: smooth, clearly contrasted blobs (learnable, but not a fixed threshold once noise,
texture and a bias field are added) on grids whose shape and voxel spacing vary per case (written into the
NIfTI affine) to exercise resampling.

Determinism: every case draws from its own generator (:func:`case_rng`, seeded with ``(seed, case
number)``), so a case does not change when others are added. The writers' output depends on the exact
order of the draws: reordering calls changes every image.
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = [
    "Grid",
    "bias_field",
    "blob",
    "case_ids",
    "case_rng",
    "coordinate_grid",
    "jitter_shape",
    "lookup",
    "min_radius",
    "random_affine",
    "random_voxel",
    "rician_noise",
    "save_nifti",
    "smooth_noise",
    "to_int16",
]

#: Sparse per-axis coordinate arrays in [-1, 1], as returned by :func:`coordinate_grid`.
Grid = list[np.ndarray]


def case_rng(seed: int, case: int, stream: int = 0) -> np.random.Generator:
    """One independent generator per case, so a case is the same whatever else is generated."""
    return np.random.default_rng([int(seed), int(case), int(stream)])


def case_ids(cases: int) -> list[int]:
    """``0..cases-1``, refusing an empty dataset."""
    if cases < 1:
        raise ValueError(f"cases must be >= 1, got {cases}")
    return list(range(int(cases)))


def jitter_shape(rng: np.random.Generator, base: Sequence[int], jitter: float = 0.15) -> tuple[int, ...]:
    """Vary the grid size per axis so that no two cases share a shape (as in real data)."""
    return tuple(max(8, int(round(b * rng.uniform(1 - jitter, 1 + jitter)))) for b in base)


def random_affine(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS diagonal affine with the case's spacing and a non-zero, roughly centred origin."""
    spacing = np.asarray(spacing, dtype=float)
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = -(np.asarray(shape[:3]) - 1) / 2.0 * spacing + rng.uniform(-20.0, 20.0, 3)
    return aff


def coordinate_grid(shape: Sequence[int]) -> Grid:
    """Sparse normalised coordinates in [-1, 1] per axis: anatomy scales with the field of view."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    return list(np.meshgrid(*axes, indexing="ij", sparse=True))


def blob(
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


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float | Sequence[float]) -> np.ndarray:
    """Unit-variance smooth random field: tissue texture, folds and patchy opacities."""
    field = ndimage.gaussian_filter(rng.standard_normal(tuple(shape), dtype=np.float32), sigma)
    return field / (field.std() + 1e-8)


def bias_field(grid: Grid, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative shading like an MR coil's, so intensity alone is not a fixed threshold."""
    lin = sum(rng.normal() * g for g in grid)
    quad = sum(rng.normal() * g * g for g in grid)
    return np.exp(strength * (lin + 0.5 * quad) / np.sqrt(len(grid))).astype(np.float32)


def rician_noise(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude-MR noise: non-negative, biased upwards in dark areas as in real scans."""
    n1 = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    n2 = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.sqrt((img + n1) ** 2 + n2**2)


def lookup(tissue: np.ndarray, values: Sequence[float]) -> np.ndarray:
    """Tissue-class map to intensities."""
    return np.asarray(values, dtype=np.float32)[tissue]


def random_voxel(rng: np.random.Generator, mask: np.ndarray, grid: Grid) -> list[float]:
    """Normalised coordinates of a random voxel of ``mask`` (a lesion centre inside an organ)."""
    idx = np.flatnonzero(mask)
    pick = np.unravel_index(idx[rng.integers(len(idx))], mask.shape)
    return [float(g.reshape(-1)[p]) for g, p in zip(grid, pick, strict=True)]


def min_radius(radii: np.ndarray, shape: Sequence[int], voxels: float) -> np.ndarray:
    """Keep a normalised radius at least ``voxels`` voxels wide so small grids keep every structure."""
    floor = voxels * 2.0 / (np.asarray(shape[: len(radii)], dtype=float) - 1)
    return np.maximum(radii, floor)


def to_int16(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Round and clip to ``[lo, hi]`` as int16, the storage type of CT and most MR exports."""
    return np.clip(np.rint(img), lo, hi).astype(np.int16)


def save_nifti(arr: np.ndarray, affine: np.ndarray, path: str) -> None:
    """Save with qform = sform = scanner and mm units, as scanner exports are."""
    img = nib.Nifti1Image(arr, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)
