"""DICOM chest radiographs reach the network as their PNG export would: VOI window applied, MONOCHROME1 inverted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from monai.transforms import LoadImage, NormalizeIntensity
from PIL import Image

from common.data.datacheck import check_datalist
from common.data.radiograph_reader import RadiographReader, read_dicom_radiograph
from common.datasets.covidx import to_grey, write_dicom_film
from common.errors import InvalidInputError


@pytest.fixture()
def film(tmp_path: Path) -> dict:
    """A PNG film and its DICOM exports: MONOCHROME2, and MONOCHROME1 (stored inverted)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :40]
    grey = np.clip(120 + 80 * np.sin(xx / 6.0) * np.cos(yy / 9.0) + rng.normal(0, 5, (48, 40)), 0, 255)
    grey = grey.astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "film.png")
    return {
        "grey": grey,
        "png": str(tmp_path / "film.png"),
        "mono2": write_dicom_film(grey, str(tmp_path / "mono2.dcm")),
        "mono1": write_dicom_film(grey, str(tmp_path / "mono1.dcm"), monochrome1=True),
    }


def _load(path: str) -> np.ndarray:
    img = LoadImage(reader=RadiographReader(converter=to_grey), image_only=True, ensure_channel_first=True)(path)
    return np.asarray(NormalizeIntensity()(img))


def test_monochrome1_and_monochrome2_load_as_the_png_does(film):
    import pydicom

    png = _load(film["png"])
    for kind in ("mono2", "mono1"):
        dicom = _load(film[kind])
        assert dicom.shape == png.shape == (1, 40, 48)  # MONAI's PILReader layout: (channel, width, height)
        np.testing.assert_allclose(dicom, png, atol=2e-2, err_msg=kind)
    stored = pydicom.dcmread(film["mono1"]).pixel_array.astype(np.float32)
    as_stored = np.asarray(NormalizeIntensity()(np.moveaxis(stored, 0, 1)[None]))
    assert np.corrcoef(as_stored.ravel(), png.ravel())[0, 1] < -0.99  # what a reader without the inversion sees


def test_the_voi_window_clips_what_lies_outside_it(film, tmp_path):
    raw = film["grey"].astype(np.int64) * 8 + 600
    centre = 600 + 8 * 127.5
    shown = read_dicom_radiograph(write_dicom_film(raw, str(tmp_path / "narrow.dcm"), window=(centre, 8 * 64)))
    assert (shown[raw >= 600 + 8 * 160] == shown.max()).all()  # above the window: white
    assert (shown[raw <= 600 + 8 * 95] == shown.min()).all()  # below: black
    inside = np.abs(raw - centre) < 8 * 30
    assert np.corrcoef(shown[inside], raw[inside])[0, 1] > 0.999  # linear inside


def test_rescale_slope_and_intercept_are_applied_before_the_window(tmp_path):
    raw = np.tile(np.arange(0, 400, 10), (8, 1))
    path = write_dicom_film(raw, str(tmp_path / "rescaled.dcm"), slope=2.0, intercept=-100.0)
    np.testing.assert_allclose(read_dicom_radiograph(path), raw * 2.0 - 100.0)


def test_a_colour_dicom_is_one_sentence(film, tmp_path):
    import pydicom

    ds = pydicom.dcmread(film["mono2"])
    ds.PhotometricInterpretation = "PALETTE COLOR"
    path = tmp_path / "palette.dcm"
    ds.save_as(str(path))
    with pytest.raises(InvalidInputError, match=r"palette.dcm: DICOM radiograph is PALETTE COLOR, expected a grey"):
        read_dicom_radiograph(path)


def test_the_data_check_reads_dicom_radiographs(film):
    check_datalist([{"image": film["mono1"], "label": 1}], image_channels=1, label_values=[0, 1], spatial_dims=2)
