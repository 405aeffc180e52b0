"""LiTS 2017: the canonical data list, and the look-alike writer (layout, HU ranges, tumours inside the liver)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from lookalike_checks import SMALL, check_geometry, confusable_shell, load, same_grid, shell
from scipy import ndimage

from common.datasets import lits


# ----------------------------------------------------------------------------------------- data list
def test_names_folds_and_determinism(tmp_path: Path) -> None:
    d = lits.build_datalist(out=str(tmp_path / "lits.json"))
    train = d["training"]
    assert len(train) == 131
    assert [e["image"] for e in train] == [f"volume-{n}.nii" for n in range(131)]
    assert [e["label"] for e in train] == [f"segmentation-{n}.nii" for n in range(131)]
    assert d["num_folds"] == 5 and d["testing"] == []
    sizes = Counter(e["fold"] for e in train)
    assert set(sizes) == set(range(5)) and max(sizes.values()) - min(sizes.values()) <= 1
    assert lits.build_datalist() == d
    assert "Training Batch" in d["description"]
    assert json.loads((tmp_path / "lits.json").read_text()) == d


def test_suffix() -> None:
    gz = lits.build_datalist(suffix=".nii.gz")["training"]
    assert gz[7]["image"] == "volume-7.nii.gz" and gz[7]["label"] == "segmentation-7.nii.gz"
    assert [e["fold"] for e in gz] == [e["fold"] for e in lits.build_datalist()["training"]]


# ---------------------------------------------------------------------------------------- look-alike
@pytest.fixture(scope="module")
def lookalike(tmp_path_factory: pytest.TempPathFactory) -> str:
    return lits.write_lookalike(str(tmp_path_factory.mktemp("lits")), cases=4, seed=0, size=SMALL)


def test_lookalike_layout_and_content(lookalike: str) -> None:
    expected = {f"volume-{n}.nii" for n in range(4)} | {f"segmentation-{n}.nii" for n in range(4)}
    assert set(os.listdir(lookalike)) == expected
    vols, n_tumour = [], 0
    for n in range(4):
        vol = load(os.path.join(lookalike, f"volume-{n}.nii"))
        seg = load(os.path.join(lookalike, f"segmentation-{n}.nii"))
        same_grid(vol, seg)
        assert vol.get_data_dtype() == np.int16 and seg.get_data_dtype() == np.uint8
        ct, lab = np.asarray(vol.dataobj), np.asarray(seg.dataobj)
        assert set(np.unique(lab).tolist()) <= {0, 1, 2} and (lab == 1).any()
        assert ct.min() < -900 and ct[0, 0].mean() < -900  # air outside the body
        assert ct.max() > 400  # bone
        liver = ct[lab == 1]
        assert 35 < np.median(liver) < 85
        # most voxels around the liver fall outside the liver's own intensity range (fat, bone, muscle)
        lo, hi = np.percentile(liver, [5, 95])
        around = ct[shell(lab > 0)]
        assert ((around >= lo) & (around <= hi)).mean() < 0.35
        if (lab == 2).any():
            n_tumour += 1
            assert np.median(ct[lab == 2]) < np.median(liver) - 10
            # tumours lie inside the liver: every tumour voxel's neighbours are liver or tumour
            assert set(np.unique(lab[ndimage.binary_dilation(lab == 2)]).tolist()) <= {1, 2}
        vols.append(vol)
    assert n_tumour >= 1
    check_geometry(vols)


def test_lookalike_names_match_the_canonical_list(lookalike: str) -> None:
    first = lits.build_datalist()["training"][:4]
    assert {name for e in first for name in (e["image"], e["label"])} == set(os.listdir(lookalike))


def test_hard_lookalike_puts_liver_like_tissue_against_the_liver(lookalike: str, tmp_path: Path) -> None:
    """The hard mode: same files and label values, and about twice as much liver-like tissue around the liver
    (no fat plane to the muscle wall, a stomach and spleen of nearly its density)."""
    hard = lits.write_lookalike(str(tmp_path), cases=4, seed=0, size=SMALL, hard=True)
    assert sorted(os.listdir(hard)) == sorted(os.listdir(lookalike))
    easy, difficult = [], []
    for n in range(4):
        for root, out in ((lookalike, easy), (hard, difficult)):
            ct = np.asarray(load(os.path.join(root, f"volume-{n}.nii")).dataobj)
            lab = np.asarray(load(os.path.join(root, f"segmentation-{n}.nii")).dataobj)
            assert set(np.unique(lab).tolist()) <= {0, 1, 2} and (lab == 1).any()
            out.append(confusable_shell(ct, lab > 0))
    assert np.mean(difficult) > 1.8 * np.mean(easy), (easy, difficult)
