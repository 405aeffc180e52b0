"""One bad file among good ones at inference: checked as it is read, skipped with its sentence, counted at the end."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import DataLoader

from common.data.checked_load import CheckedLoadImaged
from common.errors import InvalidInputError, MissingInputError
from common.inference.skipping import SkipBadImages, SkippingLoader, collate_skipping


def _volume(path: Path, data: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0])), path)
    return str(path)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    good = rng.normal(size=(12, 10, 8)).astype(np.float32)
    nan = good.copy()
    nan[1, 2, 3] = np.nan
    out = {
        "good": _volume(tmp_path / "good.nii.gz", good),
        "good2": _volume(tmp_path / "good2.nii.gz", good * 2),
        "nan": _volume(tmp_path / "nan.nii.gz", nan),
        "constant": _volume(tmp_path / "constant.nii.gz", np.zeros((12, 10, 8), np.float32)),
        "slice": _volume(tmp_path / "slice.nii.gz", good[:, :, :1]),
        "two_channels": _volume(tmp_path / "two.nii.gz", np.stack([good, good], -1)),
        "truncated": str(tmp_path / "truncated.nii.gz"),
        "missing": str(tmp_path / "missing.nii.gz"),
    }
    raw = Path(out["good"]).read_bytes()
    Path(out["truncated"]).write_bytes(raw[: len(raw) // 2])
    return out


@pytest.mark.parametrize("case,sentence", [
    ("nan", "{}: image has 1 NaN or infinite voxel."),
    ("constant", "{}: image is constant (every voxel is 0)."),
    ("slice", "{}: image is 2D (shape (12, 10, 1)), this bundle needs 3D images."),
    ("two_channels", "{}: image has 2 channels, expected 1."),
    ("missing", "{}: file does not exist."),
])
def test_each_problem_is_one_sentence_naming_the_file(files, case, sentence):
    load = CheckedLoadImaged("image", image_only=True, spatial_dims=3, channels=1)
    with pytest.raises((InvalidInputError, MissingInputError)) as info:
        load({"image": files[case]})
    assert str(info.value) == sentence.format(files[case])


def test_a_truncated_download_is_named_and_a_good_file_passes_unchanged(files):
    load = CheckedLoadImaged("image", image_only=True, spatial_dims=3, channels=1)
    with pytest.raises(InvalidInputError) as info:
        load({"image": files["truncated"]})
    assert str(info.value).startswith(f"{files['truncated']}: cannot be read as an image (")
    out = load({"image": files["good"]})
    np.testing.assert_array_equal(np.asarray(out["image"]), np.asarray(nib.load(files["good"]).dataobj))


def test_the_bad_file_of_a_multi_file_case_is_the_one_named(files):
    load = CheckedLoadImaged("image", image_only=True, spatial_dims=3, channels=2)
    with pytest.raises(InvalidInputError) as info:
        load({"image": [files["good"], files["truncated"]]})
    assert str(info.value).startswith(f"{files['truncated']}: cannot be read")
    assert load({"image": [files["good"], files["good2"]]})["image"].shape == (2, 12, 10, 8)


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_cases_are_skipped_logged_and_summarised(files, workers, caplog):
    names = ["good", "nan", "good2", "truncated"]
    dataset = SkipBadImages([{"image": files[n]} for n in names],
                            CheckedLoadImaged("image", image_only=True, spatial_dims=3, channels=1))
    cases = SkippingLoader(DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=collate_skipping))
    seen = [b["image"].meta["filename_or_obj"][0] for b in cases]
    assert seen == [files["good"], files["good2"]]
    assert [m["file"] for m in cases.skipped] == [files["nan"], files["truncated"]]
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert logged[0] == f"skipped: {files['nan']}: image has 1 NaN or infinite voxel."
    with pytest.raises(InvalidInputError) as info:
        cases.finish()
    assert str(info.value) == (f"2 of 4 images could not be used and have no prediction ({files['nan']}, "
                               f"{files['truncated']}; each reason is logged above); the other 2 were predicted.")


def test_a_bug_is_not_mistaken_for_a_bad_file(files):
    def broken(item):
        raise KeyError("a bug in a transform")

    cases = SkippingLoader(DataLoader(SkipBadImages([{"image": files["good"]}], broken), batch_size=1,
                                      collate_fn=collate_skipping))
    with pytest.raises(RuntimeError) as info:
        list(cases)
    assert isinstance(info.value.__cause__, KeyError)


def test_nothing_skipped_finishes_quietly(files):
    dataset = SkipBadImages([{"image": files["good"]}], CheckedLoadImaged("image", image_only=True))
    cases = SkippingLoader(DataLoader(dataset, batch_size=2, collate_fn=collate_skipping))
    assert len(list(cases)) == 1 and cases.predicted == 1
    cases.finish()
