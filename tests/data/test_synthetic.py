"""Tests of the synthetic-image primitives shared by the look-alike writers (common.data.synthetic).

The writers themselves (layout, content, determinism) are tested per dataset in tests/datasets/.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from common.data import synthetic


def test_case_rng_is_per_case_and_reproducible() -> None:
    a = synthetic.case_rng(0, 3).random(4)
    np.testing.assert_array_equal(a, synthetic.case_rng(0, 3).random(4))
    assert not np.array_equal(a, synthetic.case_rng(0, 4).random(4))
    assert not np.array_equal(a, synthetic.case_rng(1, 3).random(4))
    assert not np.array_equal(a, synthetic.case_rng(0, 3, stream=1).random(4))


def test_case_ids_refuse_an_empty_dataset() -> None:
    assert synthetic.case_ids(3) == [0, 1, 2]
    with pytest.raises(ValueError, match="cases must be >= 1"):
        synthetic.case_ids(0)


def test_blob_thresholds_are_nested_shells() -> None:
    rng = np.random.default_rng(0)
    grid = synthetic.coordinate_grid((24, 24, 24))
    rho = synthetic.blob(grid, [0.0, 0.0, 0.0], [0.6, 0.7, 0.5], rng, wobble=0.1)
    inner, outer = rho < 0.8, rho < 1.0
    assert inner.any() and not (inner & ~outer).any() and outer.sum() > inner.sum()
    assert rho[12, 12, 12] < 0.2 and not outer[0, 0, 0]


def test_min_radius_keeps_structures_on_small_grids() -> None:
    r = synthetic.min_radius(np.array([0.01, 0.5]), (11, 11), voxels=2.0)
    np.testing.assert_allclose(r, [0.4, 0.5])


def test_save_nifti_writes_scanner_geometry(tmp_path) -> None:
    rng = np.random.default_rng(0)
    shape = synthetic.jitter_shape(rng, (20, 20, 20))
    affine = synthetic.random_affine(rng, shape, (0.9, 1.1, 2.5))
    path = str(tmp_path / "x.nii.gz")
    synthetic.save_nifti(synthetic.to_int16(np.full(shape, 40000.0), -1024, 3071), affine, path)
    img = nib.load(path)
    assert img.get_data_dtype() == np.int16 and int(np.asarray(img.dataobj).max()) == 3071
    np.testing.assert_allclose(img.affine, affine)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert img.header.get_xyzt_units() == ("mm", "sec")
