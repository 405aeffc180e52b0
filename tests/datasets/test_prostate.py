"""MSD Task05 prostate: the data list converted from dataset.json, and the look-alike writer."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from lookalike_checks import check_geometry, effect_size, load, paths_exist, same_grid, shell
from monai.data import load_decathlon_datalist

from common.data.datalists import load_fold
from common.datasets import prostate


# ----------------------------------------------------------------------------------------- data list
def test_dataset_json(tmp_path: Path) -> None:
    src = {
        "name": "PROSTATE",
        "description": "Prostate transitional zone and peripheral zone segmentation",
        "relase": "1.0 04/05/2018",
        "tensorImageSize": "4D",
        "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "numTraining": 7,
        "training": [
            {"image": f"./imagesTr/prostate_{i:02d}.nii.gz", "label": f"./labelsTr/prostate_{i:02d}.nii.gz"}
            for i in (16, 4, 32, 0, 1, 2, 6)
        ]
        + [{"image": "./imagesTr/._prostate_16.nii.gz", "label": "./labelsTr/._prostate_16.nii.gz"}],
        "test": [
            "./imagesTs/prostate_08.nii.gz",
            "./imagesTs/._prostate_08.nii.gz",
            "./imagesTs/prostate_22.nii.gz",
        ],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(src))
    d = prostate.build_datalist(str(tmp_path), out=str(tmp_path / "msd.json"))
    assert d["name"] == "PROSTATE" and d["labels"] == src["labels"] and d["modality"] == src["modality"]
    assert d["description"] == src["description"]
    assert len(d["training"]) == 7
    assert d["training"][0]["image"] == "imagesTr/prostate_16.nii.gz"
    assert d["training"][0]["label"] == "labelsTr/prostate_16.nii.gz"
    assert not any("._" in e["image"] or "._" in e["label"] for e in d["training"])
    sizes = Counter(e["fold"] for e in d["training"])
    assert set(sizes) == set(range(5)) and max(sizes.values()) - min(sizes.values()) <= 1
    assert d["testing"] == [
        {"image": "imagesTs/prostate_08.nii.gz"},
        {"image": "imagesTs/prostate_22.nii.gz"},
    ]
    loaded = load_decathlon_datalist(tmp_path / "msd.json", True, "testing")
    assert loaded[1]["image"] == os.path.normpath(str(tmp_path / "imagesTs/prostate_22.nii.gz"))


def test_missing_or_bad_dataset_json(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="has no dataset.json"):
        prostate.build_datalist(str(tmp_path))
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"label": "x.nii.gz"}]}))
    with pytest.raises(ValueError, match="training entry 0"):
        prostate.build_datalist(str(tmp_path))


# ---------------------------------------------------------------------------------------- look-alike
@pytest.fixture(scope="module")
def lookalike(tmp_path_factory: pytest.TempPathFactory) -> str:
    return prostate.write_lookalike(str(tmp_path_factory.mktemp("msd")), cases=4, seed=0, size=48)


def test_lookalike_layout_and_json(lookalike: str) -> None:
    assert os.path.basename(lookalike) == "Task05_Prostate"
    assert sorted(os.listdir(lookalike)) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr"]
    with open(os.path.join(lookalike, "dataset.json")) as f:
        meta = json.load(f)
    assert list(meta) == ["name", "description", "reference", "licence", "relase", "tensorImageSize",
                          "quantitative", "modality", "labels", "numTraining", "numTest", "training", "test"]
    assert meta["name"] == "PROSTATE" and meta["tensorImageSize"] == "4D"
    assert meta["modality"] == {"0": "T2", "1": "ADC"}
    assert meta["labels"] == {"0": "background", "1": "PZ", "2": "TZ"}
    assert meta["numTraining"] == len(meta["training"]) == 4 and meta["numTest"] == len(meta["test"]) == 2
    tr_names = []
    for item in meta["training"]:
        assert set(item) == {"image", "label"}
        name = item["image"].removeprefix("./imagesTr/")
        assert re.fullmatch(r"prostate_\d{2}\.nii\.gz", name) and item["label"] == f"./labelsTr/{name}"
        tr_names.append(name)
    ts_names = []
    for item in meta["test"]:
        assert isinstance(item, str) and item.startswith("./imagesTs/prostate_")
        ts_names.append(item.removeprefix("./imagesTs/"))
    assert "prostate_00.nii.gz" in tr_names and not set(tr_names) & set(ts_names)
    assert sorted(os.listdir(os.path.join(lookalike, "imagesTr"))) == sorted([*tr_names, "._prostate_00.nii.gz"])
    assert sorted(os.listdir(os.path.join(lookalike, "labelsTr"))) == sorted(tr_names)
    assert sorted(os.listdir(os.path.join(lookalike, "imagesTs"))) == sorted(ts_names)
    with pytest.raises(Exception):  # noqa: B017 - the junk file is not a NIfTI; loaders must skip it
        nib.load(os.path.join(lookalike, "imagesTr", "._prostate_00.nii.gz")).get_fdata()
    # test images are 4D channel-last too
    for name in ts_names:
        assert load(os.path.join(lookalike, "imagesTs", name)).shape[-1] == 2


def test_lookalike_content(lookalike: str) -> None:
    imgs = []
    for name in sorted(f for f in os.listdir(os.path.join(lookalike, "labelsTr"))):
        img = load(os.path.join(lookalike, "imagesTr", name))
        seg = load(os.path.join(lookalike, "labelsTr", name))
        assert img.ndim == 4 and img.shape[-1] == 2 and seg.ndim == 3
        assert img.get_data_dtype() == np.float32 and seg.get_data_dtype() == np.uint8
        same_grid(img, seg)
        assert img.shape[0] > 1.2 * img.shape[2] and img.shape[1] > 1.2 * img.shape[2]  # in-plane > slices
        zooms = img.header.get_zooms()
        assert zooms[2] > 3 * zooms[0] and zooms[0] == pytest.approx(zooms[1])
        data, lab = img.get_fdata(dtype=np.float32), np.asarray(seg.dataobj)
        assert set(np.unique(lab).tolist()) == {0, 1, 2}
        t2, adc = data[..., 0], data[..., 1]
        assert t2.min() >= 0 and adc.min() >= 0
        gland = lab > 0
        assert effect_size(t2[gland], t2[shell(gland, 1)]) > 0.7  # the dark capsule around the gland
        assert t2[lab == 1].mean() > t2[lab == 2].mean() * 1.15  # bright PZ, darker TZ
        assert adc[lab == 1].mean() > adc[lab == 2].mean()
        assert (lab > 0).any(axis=(0, 1)).sum() < lab.shape[2]  # apex/base slices without gland
        imgs.append(seg)
    check_geometry(imgs)


def test_lookalike_lists_like_the_real_download(lookalike: str, tmp_path: Path) -> None:
    """The converter drops the macOS junk file the look-alike writes, as it must for the real tarball."""
    out = tmp_path / "msd.json"
    d = prostate.build_datalist(lookalike, out=str(out))
    assert len(d["training"]) == 4 and len(d["testing"]) == 2
    assert paths_exist(load_fold(str(out), lookalike, 0, "all") + load_fold(str(out), lookalike, 0, "test"))
