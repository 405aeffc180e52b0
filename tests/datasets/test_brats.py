"""BraTS 2020: the canonical data list, the look-alike writer, and the 4D stacking command."""

from __future__ import annotations

import os
from collections import Counter

import nibabel as nib
import numpy as np
import pytest
from lookalike_checks import SMALL, check_geometry, effect_size, load, same_grid
from scipy import ndimage

from common.datasets import brats


# ----------------------------------------------------------------------------------------- data list
def test_channels_and_case_355() -> None:
    d = brats.build_datalist()
    train = d["training"]
    assert len(train) == 369
    sizes = Counter(e["fold"] for e in train)
    assert set(sizes) == set(range(5)) and max(sizes.values()) - min(sizes.values()) <= 1
    first = train[0]
    case = "BraTS20_Training_001"
    assert first["image"] == [f"{case}/{case}_{c}.nii" for c in ("t1", "t1ce", "t2", "flair")]
    assert first["label"] == f"{case}/{case}_seg.nii"
    by_case = {e["label"].split("/")[0]: e for e in train}
    assert by_case["BraTS20_Training_355"]["label"] == "BraTS20_Training_355/W39_1998.09.19_Segm.nii"
    assert (
        by_case["BraTS20_Training_355"]["image"][3] == "BraTS20_Training_355/BraTS20_Training_355_flair.nii"
    )
    assert by_case["BraTS20_Training_369"]["label"].endswith("BraTS20_Training_369_seg.nii")
    assert brats.build_datalist() == d


# ---------------------------------------------------------------------------------------- look-alike
@pytest.fixture(scope="module")
def lookalike(tmp_path_factory: pytest.TempPathFactory) -> str:
    return brats.write_lookalike(str(tmp_path_factory.mktemp("brats")), seed=0, size=SMALL, ids=[354, 355])


def test_lookalike_layout_and_quirk(lookalike: str) -> None:
    assert os.path.basename(lookalike) == "MICCAI_BraTS2020_TrainingData"
    assert sorted(os.listdir(lookalike)) == ["BraTS20_Training_354", "BraTS20_Training_355", "name_mapping.csv"]
    mods = ["flair", "t1", "t1ce", "t2"]
    assert sorted(os.listdir(os.path.join(lookalike, "BraTS20_Training_354"))) == sorted(
        [f"BraTS20_Training_354_{m}.nii" for m in [*mods, "seg"]]
    )
    assert sorted(os.listdir(os.path.join(lookalike, "BraTS20_Training_355"))) == sorted(
        [f"BraTS20_Training_355_{m}.nii" for m in mods] + ["W39_1998.09.19_Segm.nii"]
    )


def test_lookalike_names_match_the_canonical_list(lookalike: str) -> None:
    cases = set(os.listdir(lookalike)) - {"name_mapping.csv"}
    entries = [e for e in brats.build_datalist()["training"] if e["label"].split("/")[0] in cases]
    assert len(entries) == 2
    for e in entries:
        assert all(os.path.isfile(os.path.join(lookalike, p)) for p in [*e["image"], e["label"]])


def test_lookalike_content(lookalike: str) -> None:
    segs = []
    for n, seg_name in [(354, "BraTS20_Training_354_seg.nii"), (355, "W39_1998.09.19_Segm.nii")]:
        folder = os.path.join(lookalike, f"BraTS20_Training_{n}")
        seg = load(os.path.join(folder, seg_name))
        lab = np.asarray(seg.dataobj)
        assert seg.get_data_dtype() == np.uint8
        assert set(np.unique(lab).tolist()) == {0, 1, 2, 4}
        # nesting of a real glioma: necrosis only touches the enhancing rim, the core only edema
        assert set(np.unique(lab[ndimage.binary_dilation(lab == 1)]).tolist()) <= {1, 4}
        core = (lab == 1) | (lab == 4)
        assert set(np.unique(lab[ndimage.binary_dilation(core)]).tolist()) <= {1, 2, 4}
        imgs = {}
        for m in ["flair", "t1", "t1ce", "t2"]:
            img = load(os.path.join(folder, f"BraTS20_Training_{n}_{m}.nii"))
            same_grid(img, seg)
            imgs[m] = np.asarray(img.dataobj).astype(float)
            assert imgs[m].min() >= 0
        brain = imgs["flair"] > 0
        for m, a in imgs.items():  # skull-stripped: same brain support in every modality, zero outside
            np.testing.assert_array_equal(a > 0, brain, err_msg=m)
        assert not brain[0, 0, 0] and np.all(brain[lab > 0])
        wt = lab > 0
        assert effect_size(imgs["flair"][wt], imgs["flair"][brain & ~wt]) > 1.0
        assert imgs["flair"][wt].mean() > imgs["flair"][brain & ~wt].mean()
        assert imgs["t1ce"][lab == 4].mean() > 1.5 * imgs["t1ce"][lab == 2].mean()
        assert imgs["t2"][lab == 2].mean() > imgs["t2"][brain & ~wt].mean()
        segs.append(seg)
    check_geometry(segs)


def test_lookalike_case_independent_of_others(lookalike: str, tmp_path) -> None:
    """Case 355 is drawn from (seed, 355): asking for it alone gives the same volume."""
    root = brats.write_lookalike(str(tmp_path), seed=0, size=SMALL, ids=[355])
    mask = os.path.join("BraTS20_Training_355", "W39_1998.09.19_Segm.nii")
    alone = np.asarray(load(os.path.join(root, mask)).dataobj)
    np.testing.assert_array_equal(alone, np.asarray(load(os.path.join(lookalike, mask)).dataobj))
    assert (alone == 4).any()
    for m in ("flair", "t1", "t1ce", "t2"):  # the four images too, voxel for voxel
        image = os.path.join("BraTS20_Training_355", f"BraTS20_Training_355_{m}.nii")
        np.testing.assert_array_equal(np.asarray(load(os.path.join(root, image)).dataobj),
                                      np.asarray(load(os.path.join(lookalike, image)).dataobj), err_msg=m)


def test_lookalike_default_numbering_and_bad_ids(tmp_path) -> None:
    root = brats.write_lookalike(str(tmp_path), cases=2, size=24)
    assert sorted(os.listdir(root)) == ["BraTS20_Training_001", "BraTS20_Training_002", "name_mapping.csv"]
    with pytest.raises(ValueError, match="distinct"):
        brats.write_lookalike(str(tmp_path), ids=[3, 3], size=24)


# --------------------------------------------------------------------------------------------- stack
def test_stack_answers_with_a_summary(lookalike: str, tmp_path) -> None:
    out = tmp_path / "studies"
    answer = brats.stack(lookalike, str(out))
    assert answer == f"wrote 2 4-channel images to {out} (masks under {out / 'labels' / 'final'})"
    image = nib.load(out / "BraTS20_Training_355.nii.gz")
    assert image.shape[-1] == 4 and (out / "labels" / "final" / "BraTS20_Training_355.nii.gz").is_file()
