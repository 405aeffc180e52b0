"""Checks shared by the look-alike tests of every dataset (tests/datasets/): loading, geometry, contrast."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

SMALL = 32  # grid size of the look-alike tests: keeps them fast


def load(path: str) -> nib.Nifti1Image:
    img = nib.load(path)
    assert isinstance(img, nib.Nifti1Image)
    return img


def shell(mask: np.ndarray, width: int = 3) -> np.ndarray:
    """Background voxels just around the foreground: the hardest background to tell apart."""
    return ndimage.binary_dilation(mask, iterations=width) & ~mask


def effect_size(a: np.ndarray, b: np.ndarray) -> float:
    """|mean difference| / pooled std, a scale-free measure of how separable two intensity sets are."""
    a, b = a.astype(float), b.astype(float)
    return abs(a.mean() - b.mean()) / np.sqrt(0.5 * (a.var() + b.var()) + 1e-9)


def confusable_shell(img: np.ndarray, mask: np.ndarray, width: int = 2) -> float:
    """Share of the background shell around ``mask`` whose intensity lies within one std of the target's mean.

    How much of what touches the target looks like it: near 0 when a threshold finds the outline.
    """
    img = img.astype(float)
    mu, sd = img[mask].mean(), img[mask].std()
    return float((np.abs(img[shell(mask, width)] - mu) < sd).mean())


def same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image) -> None:
    assert a.shape[:3] == b.shape[:3]
    np.testing.assert_allclose(a.affine, b.affine)


def check_geometry(imgs: list[nib.Nifti1Image]) -> None:
    """Spacings vary per case, are in the affine and pixdim, and the origin is not zero."""
    zooms = {tuple(np.round(i.header.get_zooms()[:3], 4)) for i in imgs}
    assert len(zooms) == len(imgs)
    for i in imgs:
        np.testing.assert_allclose(np.abs(np.diag(i.affine)[:3]), i.header.get_zooms()[:3], rtol=1e-5)
        assert np.abs(i.affine[:3, 3]).sum() > 1.0
        assert int(i.header["sform_code"]) == 1 and int(i.header["qform_code"]) == 1


def paths_exist(entries: list[dict]) -> bool:
    """Every image/label path of a ``load_fold`` result is a file (labels may be class numbers)."""
    paths = []
    for e in entries:
        for key in ("image", "label"):
            value = e.get(key)
            paths += value if isinstance(value, list) else [value] if isinstance(value, str) else []
    return bool(paths) and all(os.path.isfile(p) for p in paths)


def read_tree(root: str) -> dict[str, np.ndarray | bytes]:
    """Every file under root as an array (images) or bytes (text files), keyed by relative path."""
    out: dict[str, np.ndarray | bytes] = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            key = os.path.relpath(path, root)
            if f.startswith("._") or f.endswith((".txt", ".json", ".csv")):
                with open(path, "rb") as fh:
                    out[key] = fh.read()
            elif f.endswith((".nii", ".nii.gz")):
                img = load(path)
                out[key] = np.asarray(img.dataobj)
                out[key + ":affine"] = img.affine
            else:
                with Image.open(path) as im:
                    out[key] = np.asarray(im)
    return out
