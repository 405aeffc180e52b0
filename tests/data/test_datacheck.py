"""Tests of common.data.datacheck: every failure kind gives one sentence naming the right file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from common import REPO_ROOT
from common.data.datacheck import DataCheckError, assert_valid, check_datalist

REPO = REPO_ROOT
SHAPE = (8, 8, 8)


def _nii(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> str:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return str(path)


def _vol(path: Path, shape: tuple[int, ...] = SHAPE, affine: np.ndarray | None = None) -> str:
    return _nii(path, np.arange(np.prod(shape), dtype=np.int16).reshape(shape) % 100, affine)


def _seg(path: Path, values: tuple[int, ...] = (0, 1, 2), shape: tuple[int, ...] = SHAPE) -> str:
    data = np.resize(np.array(values, np.uint8), shape)
    return _nii(path, data)


def _problems(data: list[dict], **kwargs) -> list[str]:
    with pytest.raises(DataCheckError) as err:
        check_datalist(data, **kwargs)
    lines = str(err.value).split("\n")
    assert lines[0] == f"{len(lines) - 1} of {len(data)} cases failed the data check:"
    assert err.value.problems == lines[1:]
    return lines[1:]


def _one(data: list[dict], path: str, fragment: str, **kwargs) -> str:
    problems = _problems(data, **kwargs)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: "), problems[0]
    assert fragment in problems[0], problems[0]
    assert problems[0].endswith(".")
    return problems[0]


# ------------------------------------------------------------------------------------------- OK
def test_ok_data_passes(tmp_path: Path) -> None:
    seg = [{"image": _vol(tmp_path / "v.nii"), "label": _seg(tmp_path / "s.nii.gz")}]
    check_datalist(seg, image_channels=1, label_values=[0, 1, 2])
    brats = [
        {"image": [_vol(tmp_path / f"c{i}.nii") for i in range(4)], "label": _seg(tmp_path / "b.nii", (0, 4))}
    ]
    check_datalist(brats, image_channels=4, label_values=[0, 1, 2, 4])
    msd = [{"image": _vol(tmp_path / "m.nii.gz", (*SHAPE, 2)), "label": _seg(tmp_path / "ml.nii.gz")}]
    check_datalist(msd, image_channels=2, label_values=[0, 1, 2])
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "g.png")
    Image.fromarray(np.arange(192, dtype=np.uint8).reshape(8, 8, 3)).save(tmp_path / "c.jpg")
    cls = [{"image": str(tmp_path / "g.png"), "label": 0}, {"image": str(tmp_path / "c.jpg"), "label": 1}]
    check_datalist(cls, image_channels=(1, 3), label_values=[0, 1])
    check_datalist(cls)  # no channel / value expectations
    assert assert_valid(seg, image_channels=1) is seg
    test_only = [{"image": _vol(tmp_path / "t.nii")}]
    check_datalist(test_only, image_channels=1, label_values=[0, 1])


# ------------------------------------------------------------------------------------- failures
def test_missing_files(tmp_path: Path) -> None:
    vol = _vol(tmp_path / "v.nii")
    missing = str(tmp_path / "x.nii.gz")
    _one([{"image": missing, "label": _seg(tmp_path / "s.nii")}], missing, "file does not exist")
    _one([{"image": vol, "label": missing}], missing, "file does not exist")
    chans = [vol, vol, missing, vol]
    _one([{"image": chans, "label": _seg(tmp_path / "s.nii")}], missing, "file does not exist")


def test_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"not a nifti file at all")
    msg = _one([{"image": str(bad)}], str(bad), "cannot be read as an image (")
    assert msg.endswith(").")
    trunc = tmp_path / "trunc.nii"
    full = Path(_vol(tmp_path / "full.nii")).read_bytes()
    trunc.write_bytes(full[:-100])
    _one([{"image": str(trunc)}], str(trunc), "truncated")
    png = tmp_path / "bad.png"
    png.write_bytes(b"\x89PNG garbage")
    _one([{"image": str(png), "label": 1}], str(png), "cannot be read as an image")
    other = tmp_path / "img.xyz"
    other.write_bytes(b"x")
    _one([{"image": str(other)}], str(other), "unsupported file type")
    vol = _vol(tmp_path / "v.nii")
    badseg = tmp_path / "badseg.nii.gz"
    badseg.write_bytes(b"junk")
    _one([{"image": vol, "label": str(badseg)}], str(badseg), "cannot be read as an image")


def test_channel_count(tmp_path: Path) -> None:
    four_d = _vol(tmp_path / "v2.nii", (*SHAPE, 2))
    msg = _one([{"image": four_d}], four_d, "image has 2 channels, expected 1.", image_channels=1)
    assert msg == f"{four_d}: image has 2 channels, expected 1."
    files = [_vol(tmp_path / f"c{i}.nii") for i in range(3)]
    _one([{"image": files}], files[0], "image has 3 channels, expected 4.", image_channels=4)
    Image.new("RGBA", (8, 8)).save(tmp_path / "a.png")
    png = str(tmp_path / "a.png")
    _one([{"image": png, "label": 0}], png, "image has 4 channels, expected 1 or 3.", image_channels=(1, 3))


def test_grid_mismatch(tmp_path: Path) -> None:
    vol = _vol(tmp_path / "volume-3.nii", (8, 8, 9))
    seg = _seg(tmp_path / "segmentation-3.nii")
    msg = _one([{"image": vol, "label": seg}], seg, "label grid")
    assert msg == f"{seg}: label grid (8, 8, 8) does not match its image {vol} (8, 8, 9)."
    shifted = np.eye(4)
    shifted[0, 3] = 2.5
    vol2 = _vol(tmp_path / "shifted.nii", affine=shifted)
    _one([{"image": vol2, "label": seg}], seg, "label affine does not match its image")
    nearly = np.eye(4)
    nearly[0, 3] = 1e-5
    check_datalist([{"image": _vol(tmp_path / "near.nii", affine=nearly), "label": seg}])
    check_datalist([{"image": vol, "label": seg}], check_grid=False)
    # channel files of one case on different grids; 4D channel-last image vs 3D label is fine
    chans = [_vol(tmp_path / "a.nii"), _vol(tmp_path / "b.nii", (8, 8, 7))]
    _one([{"image": chans, "label": seg}], chans[1], "image channel grid")
    check_datalist([{"image": _vol(tmp_path / "m.nii.gz", (*SHAPE, 2)), "label": seg}])


def test_label_values(tmp_path: Path) -> None:
    vol = _vol(tmp_path / "v.nii")
    seg = _seg(tmp_path / "seg.nii", (0, 1, 3, 7))
    msg = _one([{"image": vol, "label": seg}], seg, "", label_values=[0, 1, 2])
    assert msg == f"{seg}: unexpected label values [3, 7]; expected a subset of [0, 1, 2]."
    float_seg = _nii(tmp_path / "f.nii.gz", np.resize(np.array([0.0, 1.0, 0.5], np.float32), SHAPE))
    _one([{"image": vol, "label": float_seg}], float_seg, "[0.5]", label_values=[0, 1])
    check_datalist(
        [{"image": vol, "label": _nii(tmp_path / "ok.nii", np.ones(SHAPE, np.float32))}], label_values=[0, 1]
    )
    Image.new("L", (8, 8)).save(tmp_path / "g.png")
    png = str(tmp_path / "g.png")
    _one(
        [{"image": png, "label": 2}],
        png,
        "unexpected label value 2; expected one of [0, 1]",
        label_values=[0, 1],
    )


def test_many_bad_cases_reported(tmp_path: Path) -> None:
    good = {"image": _vol(tmp_path / "v0.nii"), "label": _seg(tmp_path / "s0.nii")}
    missing = str(tmp_path / "none.nii")
    bad_vals = _seg(tmp_path / "s2.nii", (0, 5))
    data = [
        good,
        {"image": missing, "label": _seg(tmp_path / "s1.nii")},
        {"image": _vol(tmp_path / "v2.nii"), "label": bad_vals},
        good,
        {"image": _vol(tmp_path / "v4.nii", (*SHAPE, 3)), "label": missing},
    ]
    problems = _problems(data, image_channels=1, label_values=[0, 1, 2])
    assert len(problems) == 3
    assert problems[0].startswith(f"{missing}: file does not exist")
    assert problems[1].startswith(f"{bad_vals}: unexpected label values [5]")
    assert problems[2].startswith(f"{missing}: file does not exist")  # first problem of the case only
    with pytest.raises(DataCheckError, match="3 of 5 cases"):
        assert_valid(data, image_channels=1, label_values=[0, 1, 2])
    with pytest.raises(ValueError, match="empty"):
        check_datalist([])


# ------------------------------------------------------------------------------------------ CLI
def test_cli_exit_codes(tmp_path: Path) -> None:
    _vol(tmp_path / "volume-0.nii")
    _seg(tmp_path / "segmentation-0.nii", (0, 1, 2))
    _vol(tmp_path / "volume-1.nii")
    _seg(tmp_path / "segmentation-1.nii", (0, 3))
    entries = [{"image": f"volume-{i}.nii", "label": f"segmentation-{i}.nii", "fold": i} for i in range(2)]
    listfile = tmp_path / "list.json"
    listfile.write_text(json.dumps({"num_folds": 5, "training": entries}))

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "common", "datacheck", str(listfile), "--dataset_dir", str(tmp_path), *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60)

    ok = run("--fold", "0", "--split", "val", "--image_channels", "1", "--label_values", "[0,1,2]")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "OK: 1 cases checked"
    bad = run("--label_values", "[0,1,2]")
    assert bad.returncode == 1
    assert "1 of 2 cases failed the data check:" in bad.stderr
    assert f"{tmp_path / 'segmentation-1.nii'}: unexpected label values [3]" in bad.stderr


# ------------------------------------------------------------------ what only reading every voxel finds
def test_truncated_nii_gz_is_found(tmp_path: Path) -> None:
    image = _nii(tmp_path / "v.nii.gz", np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32))
    data = Path(image).read_bytes()
    Path(image).write_bytes(data[: len(data) // 2])
    [line] = _problems([{"image": image, "label": _seg(tmp_path / "s.nii.gz", shape=(32, 32, 32))}])
    assert line.startswith(f"{image}: cannot be read as an image (") and line.endswith(").")


def test_2d_image_to_a_3d_bundle(tmp_path: Path) -> None:
    flat = _vol(tmp_path / "v.nii", (8, 8, 1))
    [line] = _problems([{"image": flat}], spatial_dims=3)
    assert line == f"{flat}: image is 2D (shape (8, 8, 1)), this bundle needs 3D images."
    png = tmp_path / "x.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(png)
    check_datalist([{"image": str(png)}], spatial_dims=2)
    [line] = _problems([{"image": _vol(tmp_path / "w.nii")}], spatial_dims=2)
    assert "image is 3D (shape (8, 8, 8)), this bundle needs 2D images." in line


def test_nan_voxels_and_constant_image(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    data[0, 0, :3] = np.nan
    nan = _nii(tmp_path / "nan.nii.gz", data)
    const = _nii(tmp_path / "const.nii.gz", np.full(SHAPE, 7, np.int16))
    lines = _problems([{"image": nan}, {"image": const}])
    assert lines == [f"{nan}: image has 3 NaN or infinite voxels.", f"{const}: image is constant (every voxel is 7)."]


def test_empty_label_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    label = _seg(tmp_path / "s.nii", values=(0,))
    check_datalist([{"image": _vol(tmp_path / "v.nii"), "label": label}], label_values=[0, 1])
    assert f"{label}: the label is empty (no foreground voxel)." in caplog.text


# ------------------------------------------------------------------ formats MONAI's ITK reader opens
def _itk(path: Path, data: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> str:
    """``data`` indexed (x, y, z) like nibabel's, written with ITK (which stores (z, y, x))."""
    import itk

    img = itk.image_from_array(np.ascontiguousarray(data.transpose(2, 1, 0)))
    img.SetSpacing(list(spacing))
    img.SetOrigin(list(origin))
    itk.imwrite(img, str(path))
    return str(path)


def test_nrrd_mha_and_dicom_series(tmp_path: Path) -> None:
    import itk

    image = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) % 50
    label = np.resize(np.array([0, 1], np.uint8), SHAPE)
    nrrd = {"image": _itk(tmp_path / "v.nrrd", image), "label": _itk(tmp_path / "s.nrrd", label)}
    check_datalist([nrrd], image_channels=1, label_values=[0, 1], spatial_dims=3)
    # NIfTI image, MetaImage label on the same grid: ITK's LPS is turned to nibabel's RAS, so they agree
    affine = np.diag([-2.0, -1.0, 3.0, 1.0])
    affine[:3, 3] = [5.0, 6.0, 7.0]
    mixed = {"image": _nii(tmp_path / "v.nii.gz", image, affine),
             "label": _itk(tmp_path / "s.mha", label, spacing=(2.0, 1.0, 3.0), origin=(-5.0, -6.0, 7.0))}
    check_datalist([mixed], label_values=[0, 1])
    moved = dict(mixed, label=_itk(tmp_path / "t.mha", label, spacing=(2.0, 1.0, 3.0), origin=(0.0, 0.0, 0.0)))
    [line] = _problems([moved], label_values=[0, 1])
    assert line.startswith(f"{moved['label']}: label affine does not match its image ")
    # a folder holding one DICOM series is one 3D image
    series = tmp_path / "dicom"
    series.mkdir()
    img = itk.image_from_array(np.ascontiguousarray(image.transpose(2, 1, 0)))
    names = [str(series / f"slice{i:03d}.dcm") for i in range(SHAPE[2])]
    writer = itk.ImageSeriesWriter[itk.Image[itk.SS, 3], itk.Image[itk.SS, 2]].New(
        Input=img, ImageIO=itk.GDCMImageIO.New(), FileNames=names)
    writer.Update()
    check_datalist([{"image": str(series)}], image_channels=1, spatial_dims=3)
    empty = tmp_path / "empty"
    empty.mkdir()
    [line] = _problems([{"image": str(empty)}])
    assert line == f"{empty}: cannot be read as an image (the folder holds no DICOM series)."
    raw = Path(nrrd["image"]).read_bytes()
    Path(nrrd["image"]).write_bytes(raw[: len(raw) - 100])
    [line] = _problems([nrrd])
    assert line.startswith(f"{nrrd['image']}: cannot be read as an image (")
