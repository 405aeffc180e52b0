"""Check a data list before training, so bad downloads fail in seconds with a readable message.

Training on a wrong file layout usually fails deep inside a worker process (or, worse, trains on
misaligned labels). :func:`check_datalist` reads every case (every voxel: a truncated ``.nii.gz`` is only
found by decompressing it to the end) and reports ONE sentence per failing case that names the file and
the problem; all cases are checked before raising, so one run shows every problem.

CLI::

    pocket datacheck data_lists/lits.json --dataset_dir /data/lits --label_values "[0,1,2]"
    pocket datacheck covidx.json --dataset_dir /data/covidx --split test --image_channels "(1,3)"

Bundles run it through their dataset (``common.data.caching.cached_dataset(check=...)``); elsewhere, e.g.
``"$common.data.datacheck.assert_valid(common.data.datalists.load_fold(@datalist, @dataset_dir, @fold, 'train'),
image_channels=1, label_values=[0, 1])"``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from common.errors import InvalidInputError

__all__ = ["DataCheckError", "assert_valid", "check_datalist", "check_spatial_dims", "check_voxel_values", "datacheck",
           "short_reason"]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")  # and a folder holding one DICOM series
DICOM_SUFFIXES = (".dcm", ".dicom")  # one 2D radiograph per file (pydicom)
AFFINE_TOL = 1e-3


class DataCheckError(InvalidInputError):
    """Raised when cases of a data list fail the check; ``problems`` holds one sentence per case."""

    def __init__(self, message: str, problems: Sequence[str] = (), num_cases: int = 0) -> None:
        super().__init__(message)
        self.problems = list(problems)
        self.num_cases = num_cases


class _Problem(InvalidInputError):
    """The first problem of one case (a complete sentence); collected by :func:`check_datalist`."""


class _ImageInfo:
    """What the checks need from a file header: channels, spatial shape, affine (None for 2D formats)."""

    def __init__(self, path: str, channels: int, spatial: tuple[int, ...], affine: np.ndarray | None,
                 shape: tuple[int, ...] = ()) -> None:
        self.path = path
        self.channels = channels
        self.spatial = spatial
        self.affine = affine
        self.shape = shape or spatial



# ------------------------------------------------------------------------------------------ readers
def _is_nifti(path: str) -> bool:
    return path.lower().endswith(NIFTI_SUFFIXES)


def _is_itk(path: str) -> bool:
    return path.lower().endswith(ITK_SUFFIXES) or os.path.isdir(path)


def _itk_image(path: str) -> Any:
    """An ITK image of a NRRD/MetaImage file or of the DICOM series in a folder (as MONAI's ITKReader reads)."""
    import itk

    if os.path.isdir(path):
        names = itk.GDCMSeriesFileNames.New(Directory=path).GetInputFileNames()
        if not names:
            raise ValueError("the folder holds no DICOM series")
        return itk.imread(list(names))
    return itk.imread(path)


def _itk_info(path: str) -> _ImageInfo:
    """Channels, spatial shape (x, y, z) and RAS affine of an ITK image, in nibabel's convention."""
    img = _itk_image(path)
    size = tuple(int(s) for s in img.GetLargestPossibleRegion().GetSize())
    spacing = np.asarray(img.GetSpacing(), dtype=float)
    direction = np.asarray(img.GetDirection(), dtype=float)
    affine = np.eye(len(size) + 1)
    affine[:-1, :-1] = direction * spacing
    affine[:-1, -1] = np.asarray(img.GetOrigin(), dtype=float)
    flip = np.diag([-1.0, -1.0] + [1.0] * (len(size) - 1))  # LPS (ITK) -> RAS (nibabel), like MONAI's ITKReader
    affine = flip @ affine
    return _ImageInfo(path, int(img.GetNumberOfComponentsPerPixel()), size[:3], affine, size)


def short_reason(exc: BaseException) -> str:
    """The first line of an exception's message, at most 120 characters (for a sentence about a file)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _read_header(path: str) -> _ImageInfo:
    """Read only the header of a NIfTI or Pillow image; raise _Problem if it cannot be read."""
    lower = path.lower()
    try:
        if _is_nifti(path):
            import nibabel as nib

            img = nib.load(path)
            shape = tuple(int(s) for s in img.shape)
            if lower.endswith(".nii"):
                # An uncompressed file can be checked for truncation from its size alone.
                offset = int(getattr(img.dataobj, "offset", img.header["vox_offset"]))
                needed = offset + int(np.prod(shape)) * img.header.get_data_dtype().itemsize
                size = os.path.getsize(path)
                if size < needed:
                    raise _Problem(
                        f"{path}: cannot be read as an image (file is truncated: {size} bytes, "
                        f"expected at least {needed})."
                    )
            channels = int(np.prod(shape[3:])) if len(shape) > 3 else 1
            return _ImageInfo(path, channels, shape[:3], np.asarray(img.affine, dtype=float), shape)
        if lower.endswith(DICOM_SUFFIXES):  # a single-file DICOM radiograph (a 3D series is a folder)
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return _ImageInfo(path, int(getattr(ds, "SamplesPerPixel", 1)), (int(ds.Columns), int(ds.Rows)), None)
        if lower.endswith(PIL_SUFFIXES):
            from PIL import Image

            with Image.open(path) as img:
                return _ImageInfo(path, len(img.getbands()), tuple(img.size), None)
        if _is_itk(path):
            return _itk_info(path)
    except _Problem:
        raise
    except Exception as exc:  # any reader failure is a data problem to report, not a crash
        raise _Problem(f"{path}: cannot be read as an image ({short_reason(exc)}).") from exc
    raise _Problem(
        f"{path}: cannot be read as an image (unsupported file type; expected NIfTI .nii/.nii.gz, "
        f"{'/'.join(ITK_SUFFIXES)}, a DICOM series folder, a {'/'.join(DICOM_SUFFIXES)} radiograph or "
        f"{'/'.join(PIL_SUFFIXES)})."
    )


def _read_voxels(path: str) -> np.ndarray:
    """Every voxel of a file (a compressed file is decompressed to its end, so truncation is found here)."""
    try:
        if _is_nifti(path):
            import nibabel as nib

            return np.asanyarray(nib.load(path).dataobj)
        if _is_itk(path):
            import itk

            return itk.array_from_image(_itk_image(path))  # a copy: a view dies with the image
        if path.lower().endswith(DICOM_SUFFIXES):
            from common.data.radiograph_reader import read_dicom_radiograph

            return read_dicom_radiograph(path)
        from PIL import Image

        with Image.open(path) as img:
            return np.asarray(img)
    except Exception as exc:
        raise _Problem(f"{path}: cannot be read as an image ({short_reason(exc)}).") from exc


def _check_image_voxels(path: str) -> None:
    """NaN/Inf voxels and an all-constant image are problems (a failed conversion or an empty export)."""
    check_voxel_values(path, _read_voxels(path))


def check_voxel_values(path: str, data: np.ndarray) -> None:
    """Raise ``InvalidInputError`` (a sentence naming ``path``) for NaN/Inf voxels or an all-constant image."""
    if data.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise _Problem(f"{path}: image has {bad} NaN or infinite voxel{'s' if bad != 1 else ''}.")
    if data.size and data.min() == data.max():
        raise _Problem(f"{path}: image is constant (every voxel is {_fmt_values([data.flat[0]])[1:-1]}).")


def check_spatial_dims(path: str, spatial: Sequence[int], needed: int, shape: Sequence[int] = ()) -> None:
    """Raise ``InvalidInputError`` unless the image is ``needed``-D; a volume of one slice counts as 2D."""
    dims = 3 if len(spatial) >= 3 and spatial[2] > 1 else 2
    if dims != needed:
        raise _Problem(f"{path}: image is {dims}D (shape {tuple(shape) or tuple(spatial)}), this bundle needs "
                       f"{needed}D images.")


def _unique_values(data: np.ndarray) -> np.ndarray:
    """Unique values of label data (bincount: much faster than np.unique's sort on big CT masks)."""
    if data.dtype.kind in "iub" and data.size:
        lo, hi = int(data.min()), int(data.max())
        if hi - lo < 1 << 20:
            counts = np.bincount(data.ravel().astype(np.int64) - lo)
            return np.nonzero(counts)[0] + lo
    return np.unique(data)


def _read_values(path: str) -> np.ndarray:
    """Unique values of a label file."""
    return _unique_values(_read_voxels(path))


def _fmt_values(values: Sequence[Any]) -> str:
    out = []
    for v in values:
        f = float(v)
        out.append(str(int(f)) if f.is_integer() else repr(f))
    return "[" + ", ".join(out) + "]"


def _fmt_allowed(allowed: Sequence[int]) -> str:
    allowed = list(allowed)
    if len(allowed) == 1:
        return str(allowed[0])
    return ", ".join(str(a) for a in allowed[:-1]) + f" or {allowed[-1]}"


# ------------------------------------------------------------------------------------------- checks
def _check_entry(
    entry: Any,
    index: int,
    image_channels: Sequence[int] | None,
    label_values: Sequence[int] | None,
    image_key: str,
    label_key: str,
    check_grid: bool,
    spatial_dims: int | None = None,
    check_voxels: bool = True,
) -> None:
    """Raise _Problem with the first problem of one case."""
    if not isinstance(entry, dict) or image_key not in entry:
        raise _Problem(f"case {index} ({entry!r}): has no {image_key!r} entry.")
    image = entry[image_key]
    images = [image] if isinstance(image, (str, os.PathLike)) else image
    if (
        not isinstance(images, (list, tuple))
        or not images
        or not all(isinstance(p, (str, os.PathLike)) for p in images)
    ):
        raise _Problem(f"case {index} ({entry!r}): {image_key!r} is not a path or a list of paths.")
    images = [os.fspath(p) for p in images]
    label = entry.get(label_key)
    label_file = os.fspath(label) if isinstance(label, (str, os.PathLike)) else None

    for path in [*images, *([label_file] if label_file else [])]:
        if not os.path.isfile(path) and not os.path.isdir(path):
            raise _Problem(f"{path}: file does not exist.")

    infos = [_read_header(p) for p in images]
    label_info = _read_header(label_file) if label_file else None
    if spatial_dims is not None:
        for info in [*infos, *([label_info] if label_info else [])]:
            check_spatial_dims(info.path, info.spatial, spatial_dims, info.shape)

    if image_channels is not None:
        channels = sum(i.channels for i in infos)
        if channels not in image_channels:
            raise _Problem(
                f"{images[0]}: image has {channels} channel{'s' if channels != 1 else ''}, "
                f"expected {_fmt_allowed(image_channels)}."
            )

    if check_grid:
        first = infos[0]
        for other in infos[1:]:
            _compare_grid(other, first, "image channel", "its first channel")
        if label_info is not None:
            _compare_grid(label_info, first, "label", "its image")

    if label_values is not None and label is not None:
        allowed = sorted(label_values)
        if label_file is not None:
            found = _read_values(label_file)
            if found.size and found.max() == 0:
                logger.warning("%s: the label is empty (no foreground voxel).", label_file)
            bad = [v for v in found.tolist() if v not in set(allowed)]
            if bad:
                raise _Problem(
                    f"{label_file}: unexpected label values {_fmt_values(bad)}; "
                    f"expected a subset of {_fmt_values(allowed)}."
                )
        elif isinstance(label, (int, float, np.integer, np.floating)) and not isinstance(label, bool):
            if label not in allowed:
                raise _Problem(
                    f"{images[0]}: unexpected label value {_fmt_values([label])[1:-1]}; "
                    f"expected one of {_fmt_values(allowed)}."
                )

    if check_voxels:
        for path in images:
            _check_image_voxels(path)

def _compare_grid(info: _ImageInfo, ref: _ImageInfo, what: str, ref_what: str) -> None:
    if info.spatial != ref.spatial:
        raise _Problem(
            f"{info.path}: {what} grid {info.spatial} does not match {ref_what} {ref.path} {ref.spatial}."
        )
    if info.affine is not None and ref.affine is not None:
        diff = float(np.max(np.abs(info.affine - ref.affine)))
        if not diff <= AFFINE_TOL:
            raise _Problem(
                f"{info.path}: {what} affine does not match {ref_what} {ref.path} "
                f"(largest difference {diff:.4g}, tolerance {AFFINE_TOL:g})."
            )


def _as_allowed(image_channels: int | Sequence[int] | None) -> tuple[int, ...] | None:
    if image_channels is None:
        return None
    if isinstance(image_channels, (int, np.integer)):
        return (int(image_channels),)
    return tuple(int(c) for c in image_channels)


def check_datalist(
    data: Sequence[dict],
    image_channels: int | Sequence[int] | None = None,
    label_values: Sequence[int] | None = None,
    image_key: str = "image",
    label_key: str = "label",
    check_grid: bool = True,
    spatial_dims: int | None = None,
    check_voxels: bool = True,
) -> None:
    """Check every case of ``data`` (absolute paths, as from ``load_fold``); raise DataCheckError.

    Checks, stopping at the first problem of a case: files exist, images/labels open (NIfTI via
    nibabel, NRRD/MetaImage/a DICOM series folder via ITK as MONAI's ITKReader, PNG/JPEG via Pillow),
    channel count (a list of files = one channel each, a 4D NIfTI = last dimension, 2D images = bands) is
    in ``image_channels`` (an int or allowed counts), label and image share the spatial grid (shape,
    affine within 1e-3), and label values are a subset of ``label_values`` (for classification an int
    label is checked directly).
    With ``spatial_dims`` every file must be a 2D image or a 3D volume. With ``check_voxels`` (default) every
    image is read to its last voxel: a truncated ``.nii.gz``, NaN/Inf voxels or an all-constant image is a
    problem; an empty label only a warning.
    """
    allowed_channels = _as_allowed(image_channels)
    data = list(data)
    if not data:
        raise DataCheckError("The data list is empty: there are no cases to check.", [], 0)
    from common.training.progress import progress

    problems = []
    for index, entry in enumerate(progress(data, "data check", logger)):
        try:
            _check_entry(entry, index, allowed_channels, label_values, image_key, label_key, check_grid,
                         spatial_dims, check_voxels)
        except _Problem as problem:
            problems.append(str(problem))
    if problems:
        message = f"{len(problems)} of {len(data)} cases failed the data check:\n" + "\n".join(problems)
        raise DataCheckError(message, problems, len(data))


def assert_valid(data: Sequence[dict], **kwargs: Any) -> Sequence[dict]:
    """Run :func:`check_datalist` and return ``data`` unchanged, for use inside a bundle config.

    The report is also logged at ERROR level: the bundle runner wraps exceptions raised inside config
    expressions in its own ``RuntimeError``, and the user must still see which file is wrong and why.
    """
    try:
        check_datalist(data, **kwargs)
    except DataCheckError as err:
        logger.error("%s", err)
        raise
    logger.info("data check OK: %d cases checked", len(data))
    return data


# ---------------------------------------------------------------------------------------------- CLI
def datacheck(
    datalist: str,
    dataset_dir: str,
    fold: int = -1,
    split: str = "all",
    image_channels: int | Sequence[int] | None = None,
    label_values: Sequence[int] | None = None,
    image_key: str = "image",
    label_key: str = "label",
    check_grid: bool = True,
    spatial_dims: int | None = None,
) -> int:
    """Check one split of a data list file; print "OK: M cases checked" or the problems. Returns 0/1."""
    from common.data.datalists import load_fold

    try:
        data = load_fold(datalist, dataset_dir, fold, split)
        check_datalist(
            data,
            image_channels=image_channels,
            label_values=label_values,
            image_key=image_key,
            label_key=label_key,
            check_grid=check_grid,
            spatial_dims=spatial_dims,
        )
    except (DataCheckError, ValueError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"OK: {len(data)} cases checked")
    return 0
