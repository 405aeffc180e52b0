"""Dataset fingerprint: the spacing and intensity statistics a CT bundle's preprocessing needs.

PocketNet (Celaya et al., "PocketNet: A Smaller Neural Network for Medical Image Analysis", IEEE TMI 2022)
preprocesses LiTS the nnU-Net way: resample every volume to the training set's median in-plane spacing and
90th-percentile slice spacing, clip to the 0.5/99.5 percentiles of the foreground (label > 0) intensities over
the training set, then z-score with the foreground mean and std.
Those numbers depend on the data and the fold, so they are measured by this command, not typed by hand:
it reads the training cases of one fold and writes a ``"fingerprint"`` block into every config of a bundle
that has one (only that block changes; the rest of each file is kept byte for byte)::

    pocket fingerprint --datalist data_lists/lits.json --dataset_dir /data/lits --fold 0 \\
        --bundle_dir bundles/lits_liver_ct_segmentation

Without ``--bundle_dir`` the block is printed. Only image headers are read for the spacing; the voxel data
is read in slabs of slices (memory stays bounded on 512x512x1000 volumes) and at most
``samples_per_case`` foreground voxels per case are kept for the percentiles (nnU-Net samples too). The
mean and std use every foreground voxel. ``--modality mr`` measures the spacing only (MR is z-scored per
image, not with dataset-wide statistics).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InvalidInputError, MissingInputError

__all__ = ["KEYS", "check", "compute", "fingerprint", "foreground_values", "ras_spacing", "replace_block", "write"]

logger = logging.getLogger(__name__)

KEYS = ("spacing", "clip_low", "clip_high", "mean", "std", "num_cases", "datalist", "fold")
MODALITIES = ("ct", "mr")
SAMPLES_PER_CASE = 100_000
SLAB = 32
DECIMALS = 4


# ------------------------------------------------------------------------------------------ measuring
def ras_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing in the axis order MONAI's ``Orientationd(axcodes="RAS")`` produces.

    Spacing is reported per RAS axis (not per file axis) because the bundle resamples after reorienting:
    a volume stored with the slice axis first must still contribute its slice spacing to z.
    """
    import nibabel as nib

    affine = np.asarray(affine, dtype=float)
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    ornt = nib.orientations.io_orientation(affine)
    out = np.empty(3)
    for axis in range(3):
        out[int(ornt[axis, 0])] = zooms[axis]
    return out


def foreground_values(image_path: str, label_path: str, slab: int = SLAB) -> np.ndarray:
    """Intensities (float64) of the image voxels whose label is > 0, read ``slab`` slices at a time."""
    import nibabel as nib

    # keep_file_open: a .nii.gz is then decompressed once, front to back, instead of from the start per slab
    image, label = nib.load(image_path, keep_file_open=True), nib.load(label_path, keep_file_open=True)
    if tuple(image.shape[:3]) != tuple(label.shape[:3]):
        raise InvalidInputError(f"{label_path}: label grid {label.shape[:3]} does not match its image "
                                f"{image.shape[:3]}.")
    depth = image.shape[2]
    parts = []
    for z0 in range(0, depth, slab):
        z1 = min(depth, z0 + slab)
        mask = np.asanyarray(label.dataobj[:, :, z0:z1]) > 0
        if mask.ndim > 3:
            mask = mask.reshape(mask.shape[:3])
        if not mask.any():
            continue
        values = np.asanyarray(image.dataobj[:, :, z0:z1])
        parts.append(values.reshape(mask.shape)[mask].astype(np.float64))
    return np.concatenate(parts) if parts else np.empty(0)


def _combine(stats: Sequence[tuple[int, float, float]]) -> tuple[int, float, float]:
    """Pool per-case (count, mean, sum of squared deviations) exactly (Chan et al.): no float overflow."""
    n, mean, m2 = 0, 0.0, 0.0
    for nb, mb, m2b in stats:
        if nb == 0:
            continue
        delta = mb - mean
        total = n + nb
        mean += delta * nb / total
        m2 += m2b + delta * delta * n * nb / total
        n = total
    return n, mean, m2


def compute(
    datalist: str,
    dataset_dir: str,
    fold: int = 0,
    modality: str = "ct",
    samples_per_case: int = SAMPLES_PER_CASE,
    seed: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Measure the fingerprint on the training cases (every fold but ``fold``) of ``datalist``.

    Returns the block written into the configs: spacing ``[median x, median y, 90th percentile z]`` (mm,
    RAS order) and, for CT, the 0.5/99.5 foreground percentiles (``clip_low``/``clip_high``) and the
    foreground ``mean``/``std``, plus ``num_cases``, ``datalist`` and ``fold`` to say what was measured.
    """
    import nibabel as nib

    from common.data.datalists import load_fold

    if modality not in MODALITIES:
        raise InvalidInputError(f"modality must be one of {', '.join(MODALITIES)}; got {modality!r}.")
    cases = load_fold(datalist, dataset_dir, fold, "train")
    if not cases:
        raise InvalidInputError(f"{datalist}: fold {fold} leaves no training cases to measure.")
    rng = np.random.default_rng(seed)
    spacings, samples, moments = [], [], []
    for i, case in enumerate(cases):
        image = case["image"]
        if not isinstance(image, str):
            raise InvalidInputError(f"case {i} of {datalist}: the fingerprint needs one image file per case, got "
                                    f"{image!r}.")
        spacing = ras_spacing(nib.load(image).affine)
        spacings.append(spacing)
        line = f"[fingerprint] {i + 1}/{len(cases)} {os.path.basename(image)} spacing={np.round(spacing, 3).tolist()}"
        if modality == "ct":
            if "label" not in case:
                raise InvalidInputError(f"{image}: case has no label; the CT fingerprint needs the foreground.")
            values = foreground_values(image, case["label"])
            count = int(values.size)
            if count:
                mean = float(values.mean())
                moments.append((count, mean, float(((values - mean) ** 2).sum())))
            if count > samples_per_case:
                values = rng.choice(values, size=samples_per_case, replace=False)
            samples.append(values)
            line += f" foreground={count} vox"
        if verbose:
            print(line, file=sys.stderr, flush=True)
    spacings_arr = np.stack(spacings)
    spacing_out = [
        float(np.median(spacings_arr[:, 0])),
        float(np.median(spacings_arr[:, 1])),
        float(np.percentile(spacings_arr[:, 2], 90)),
    ]
    block: dict[str, Any] = {"spacing": [round(s, DECIMALS) for s in spacing_out]}
    if modality == "ct":
        pooled = np.concatenate(samples)
        if pooled.size == 0:
            raise InvalidInputError(f"{datalist}: no training case of fold {fold} has foreground (label > 0) voxels.")
        n, mean, m2 = _combine(moments)
        lo, hi = np.percentile(pooled, [0.5, 99.5])
        std = float(np.sqrt(m2 / n))
        block.update(
            clip_low=round(float(lo), DECIMALS),
            clip_high=round(float(hi), DECIMALS),
            mean=round(mean, DECIMALS),
            std=round(std, DECIMALS),
        )
    block.update(num_cases=len(cases), datalist=str(datalist), fold=int(fold))
    return block


# ------------------------------------------------------------------------------------------- writing
def _top_level_value_span(text: str, key: str) -> tuple[int, int] | None:
    """Character span of the value of top-level ``key`` in JSON ``text`` (None if absent).

    A small scanner (strings, escapes, nesting) rather than a regex, so a nested ``"fingerprint"`` key
    or the text inside a string (e.g. ``"@fingerprint#mean"``) is never taken for the top-level one.
    """
    decoder = json.JSONDecoder()
    depth, i, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            s, end = json.decoder.scanstring(text, i + 1)
            if depth == 1 and s == key:
                j = end
                while j < n and text[j].isspace():
                    j += 1
                if j < n and text[j] == ":":
                    j += 1
                    while j < n and text[j].isspace():
                        j += 1
                    _, stop = decoder.raw_decode(text, j)
                    return j, stop
            i = end
            continue
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        i += 1
    return None


def _indent_of_line(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    line = text[start:pos]
    return line[: len(line) - len(line.lstrip())]


def replace_block(text: str, block: dict[str, Any], key: str = "fingerprint") -> str | None:
    """``text`` with the value of top-level ``key`` replaced by ``block`` (json indent 4); None if no key."""
    span = _top_level_value_span(text, key)
    if span is None:
        return None
    start, stop = span
    indent = _indent_of_line(text, start)
    value = json.dumps(block, indent=4).replace("\n", "\n" + indent)
    new = text[:start] + value + text[stop:]
    before, after = json.loads(text), json.loads(new)
    before[key] = block
    if after != before:  # should never happen; refuse to write a file that changed elsewhere
        raise RuntimeError(f"rewriting {key!r} would change other parts of the config")
    return new


def write(bundle_dir: str, block: dict[str, Any]) -> list[str]:
    """Write ``block`` into every ``configs/*.json`` of ``bundle_dir`` that has a top-level ``fingerprint``."""
    configs = Path(bundle_dir) / "configs"
    if not configs.is_dir():
        raise MissingInputError(f"{configs}: bundle configs folder does not exist.")
    written = []
    for path in sorted(configs.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        new = replace_block(text, block)
        if new is None:
            continue
        if new != text:
            path.write_text(new, encoding="utf-8")
        written.append(str(path))
    if not written:
        raise ValueError(f"{configs}: no config has a top-level 'fingerprint' key to write.")
    return written


# ---------------------------------------------------------------------------------------- using it
def check(block: dict[str, Any]) -> dict[str, Any]:
    """Validate a config's fingerprint (called from ``initialize``); warn when it is the shipped placeholder.

    A placeholder (``num_cases`` 0) still runs, because the literature values are close for LiTS, but the
    user should know the preprocessing was not measured on their data.
    """
    spacing = block.get("spacing")
    if not (isinstance(spacing, (list, tuple)) and len(spacing) == 3 and all(float(s) > 0 for s in spacing)):
        raise ValueError(f"fingerprint: spacing must be 3 positive numbers (mm); got {spacing!r}.")
    if "std" in block:
        if not float(block["std"]) > 0:
            raise ValueError(f"fingerprint: std must be > 0; got {block['std']!r}.")
        if not float(block["clip_low"]) < float(block["clip_high"]):
            raise ValueError(
                f"fingerprint: clip_low ({block['clip_low']}) must be below clip_high ({block['clip_high']})."
            )
    if int(block.get("num_cases", 0)) == 0:
        logger.warning(
            "fingerprint: using the shipped placeholder statistics (not measured on your data); run "
            "'pocket fingerprint --datalist ... --dataset_dir ... --bundle_dir ...' first."
        )
    return block


# -------------------------------------------------------------------------------------------- CLI
def fingerprint(
    datalist: str,
    dataset_dir: str,
    fold: int = 0,
    bundle_dir: str | None = None,
    modality: str = "ct",
    samples_per_case: int = SAMPLES_PER_CASE,
    seed: int = 0,
) -> str:
    """Measure the fingerprint of ``fold``'s training cases; write it into ``bundle_dir`` or print it."""
    block = compute(datalist, dataset_dir, fold, modality, samples_per_case, seed)
    text = json.dumps(block, indent=4)
    if bundle_dir is None:
        return text
    written = write(bundle_dir, block)
    return text + "\nwritten into " + ", ".join(written)
