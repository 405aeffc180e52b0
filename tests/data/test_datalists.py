"""Tests of common.data.datalists, the part every dataset shares: folds, writing, load_fold, find_images.

Each dataset's own list (names, quirks, errors) is tested in tests/datasets/test_<name>.py.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from common.data import datalists
from common.datasets import brats


def _save(tmp_path: Path, datalist: dict) -> str:
    return str(datalists.save_datalist(datalist, tmp_path / "list.json"))


# ---------------------------------------------------------------------------------------------- folds
def test_assign_folds_order_independent() -> None:
    ids = [f"s{i}" for i in range(23)]
    a = datalists.assign_folds(ids)
    b = datalists.assign_folds(list(reversed(ids)))
    assert a == b
    sizes = Counter(a.values())
    assert set(sizes) == set(range(datalists.NUM_FOLDS)) and max(sizes.values()) - min(sizes.values()) <= 1
    assert datalists.assign_folds(ids, seed=datalists.SEED + 1) != a


def test_assign_group_folds_keeps_patients_together_and_spreads_positives() -> None:
    groups = {f"p{i}": [1] * (i % 3) + [0] * (1 + i % 2) for i in range(30)}
    folds = datalists.assign_group_folds(groups)
    assert set(folds) == set(groups)
    images = Counter()
    positives = Counter()
    for pid, labels in groups.items():
        images[folds[pid]] += len(labels)
        positives[folds[pid]] += sum(labels)
    assert max(images.values()) - min(images.values()) <= 3
    assert max(positives.values()) - min(positives.values()) <= 2
    assert datalists.assign_group_folds(dict(reversed(list(groups.items())))) == folds


# -------------------------------------------------------------------------------------------- writing
def test_header_save_and_finish(tmp_path: Path) -> None:
    d = datalists.datalist_header("Toy", "Two cases.", {"0": "background", "1": "thing"}, {"0": "CT"})
    assert list(d) == ["name", "description", "labels", "modality", "num_folds"]
    assert d["num_folds"] == datalists.NUM_FOLDS
    d["training"] = [{"image": "a.nii", "label": "a_seg.nii", "fold": 0}, {"image": "b.nii", "label": 1, "fold": 1}]
    d["testing"] = []
    out = tmp_path / "sub" / "toy.json"
    assert datalists.finish_datalist(d, out) is d
    text = out.read_text(encoding="utf-8")
    assert json.loads(text) == d
    lines = text.splitlines()  # one case per line, so a committed list diffs case by case
    assert '    {"image": "a.nii", "label": "a_seg.nii", "fold": 0},' in lines
    assert '    {"image": "b.nii", "label": 1, "fold": 1}' in lines
    assert datalists.finish_datalist(d, None) is d


def test_dataset_root_names_the_missing_folder(tmp_path: Path) -> None:
    assert datalists.dataset_root(str(tmp_path), "NFBS_Dataset") == tmp_path
    with pytest.raises(FileNotFoundError) as err:
        datalists.dataset_root(str(tmp_path / "nope"), "COVIDx")
    assert str(err.value) == f"COVIDx folder {tmp_path / 'nope'} does not exist or is not a folder."


# ------------------------------------------------------------------------------------------ load_fold
def test_load_fold_splits(tmp_path: Path) -> None:
    f = str(tmp_path / "brats.json")
    brats.build_datalist(out=f)
    root = tmp_path / "data"
    train = datalists.load_fold(f, str(root), 2, "train")
    val = datalists.load_fold(f, str(root), 2, "val")
    every = datalists.load_fold(f, str(root), -1, "all")
    assert len(every) == 369 and len(train) + len(val) == 369
    key = lambda e: e["label"]  # noqa: E731
    assert not {key(e) for e in train} & {key(e) for e in val}
    assert {key(e) for e in train} | {key(e) for e in val} == {key(e) for e in every}
    for e in every:
        assert "fold" not in e
        assert os.path.isabs(e["label"]) and e["label"].startswith(str(root))
        assert len(e["image"]) == 4 and all(os.path.isabs(p) and p.startswith(str(root)) for p in e["image"])
    assert datalists.load_fold(f, str(root), 0, "test") == []
    with pytest.raises(ValueError):
        datalists.load_fold(f, str(root), 5, "train")
    with pytest.raises(ValueError):
        datalists.load_fold(f, str(root), 0, "validation")


def test_load_fold_test_split_and_int_labels(tmp_path: Path) -> None:
    f = _save(tmp_path, {
        "num_folds": 2,
        "training": [{"image": "train/a.png", "label": 1, "fold": 0}, {"image": "train/b.png", "label": 0, "fold": 1}],
        "testing": [{"image": "test/t1.png", "label": 1}, {"image": "./test/t2.png", "label": 0}],
    })
    assert datalists.load_fold(f, str(tmp_path), 0, "test") == [
        {"image": str(tmp_path / "test" / "t1.png"), "label": 1},
        {"image": str(tmp_path / "test" / "t2.png"), "label": 0},
    ]
    assert datalists.load_fold(f, str(tmp_path), 1, "val") == [{"image": str(tmp_path / "train" / "b.png"), "label": 0}]
    with pytest.raises(ValueError, match="0..1"):
        datalists.load_fold(f, str(tmp_path), 2, "train")


def test_load_fold_msd_test_strings_and_missing_fold(tmp_path: Path) -> None:
    f = _save(tmp_path, {"training": [{"image": "a.nii"}], "test": ["imagesTs/x.nii.gz"]})
    assert datalists.load_fold(f, "/d", 0, "test") == [{"image": os.path.normpath("/d/imagesTs/x.nii.gz")}]
    assert datalists.load_fold(f, "/d", 0, "all") == [{"image": os.path.normpath("/d/a.nii")}]
    with pytest.raises(ValueError, match="has no 'fold' key"):
        datalists.load_fold(f, "/d", 0, "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datalists.load_fold(str(tmp_path / "missing.json"), "/d", 0, "train")


# ---------------------------------------------------------------------------------------- find_images
def test_find_images_sorted_without_macos_junk(tmp_path: Path) -> None:
    for name in ("b.nii.gz", "a.nii.gz", "._a.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert datalists.find_images(str(tmp_path), "*.nii.gz") == [
        {"image": str(tmp_path / "a.nii.gz")},
        {"image": str(tmp_path / "b.nii.gz")},
    ]
    with pytest.raises(FileNotFoundError, match=r"no input image matches '\*\.nii'"):
        datalists.find_images(str(tmp_path), "*.nii")
    with pytest.raises(FileNotFoundError, match="input folder does not exist"):
        datalists.find_images(str(tmp_path / "missing"), "*.nii.gz")
