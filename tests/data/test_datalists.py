"""Tests of common.data.datalists: canonical lists, builders from downloads, folds and load_fold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from monai.data import load_decathlon_datalist

from common import REPO_ROOT
from common.data import datalists

REPO = REPO_ROOT


def _fold_sizes(entries: list[dict]) -> list[int]:
    counts = Counter(e["fold"] for e in entries)
    assert set(counts) == set(range(datalists.NUM_FOLDS))
    return [counts[k] for k in range(datalists.NUM_FOLDS)]


def _assert_balanced(entries: list[dict]) -> None:
    sizes = _fold_sizes(entries)
    assert max(sizes) - min(sizes) <= 1, sizes


# ------------------------------------------------------------------------------------ canonical
def test_lits_names_folds_and_determinism(tmp_path: Path) -> None:
    d = datalists.lits(out=str(tmp_path / "lits.json"))
    train = d["training"]
    assert len(train) == 131
    assert [e["image"] for e in train] == [f"volume-{n}.nii" for n in range(131)]
    assert [e["label"] for e in train] == [f"segmentation-{n}.nii" for n in range(131)]
    assert d["num_folds"] == 5 and d["testing"] == []
    _assert_balanced(train)
    assert datalists.lits() == d
    assert "Training Batch" in d["description"]
    assert json.loads((tmp_path / "lits.json").read_text()) == d


def test_brats_channels_and_case_355() -> None:
    d = datalists.brats()
    train = d["training"]
    assert len(train) == 369
    _assert_balanced(train)
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
    assert datalists.brats() == d


def test_write_all_matches_committed_and_monai_reads(tmp_path: Path) -> None:
    written = datalists.write_all(str(tmp_path))
    assert sorted(Path(p).name for p in written) == ["brats2020.json", "lits.json"]
    for name in ("lits.json", "brats2020.json"):
        committed = REPO / "data_lists" / name
        if committed.exists():  # the committed files must be exactly what the command generates
            assert committed.read_text() == (tmp_path / name).read_text()
    lits = load_decathlon_datalist(tmp_path / "lits.json", True, "training", base_dir="/data/lits")
    assert len(lits) == 131 and lits[5]["image"] == os.path.normpath("/data/lits/volume-5.nii")
    brats = load_decathlon_datalist(tmp_path / "brats2020.json", True, "training", base_dir="/b")
    assert len(brats) == 369 and isinstance(brats[0]["image"], list) and len(brats[0]["image"]) == 4


def test_assign_folds_order_independent() -> None:
    ids = [f"s{i}" for i in range(23)]
    a = datalists.assign_folds(ids)
    b = datalists.assign_folds(list(reversed(ids)))
    assert a == b
    sizes = Counter(a.values())
    assert max(sizes.values()) - min(sizes.values()) <= 1


# ----------------------------------------------------------------------------------------- NFBS
def _make_nfbs(root: Path, ids: list[str]) -> None:
    for sid in ids:
        (root / sid).mkdir(parents=True)
        for suffix in ("", "_brain", "_brainmask"):
            (root / sid / f"sub-{sid}_ses-NFB3_T1w{suffix}.nii.gz").write_bytes(b"x")


def test_nfbs_scan(tmp_path: Path) -> None:
    ids = ["A00028185", "A00019888", "A00055447", "A00032875", "A00060925", "A00061204", "A00057965"]
    _make_nfbs(tmp_path, ids)
    (tmp_path / "README.txt").write_text("not a subject")
    d = datalists.nfbs(str(tmp_path), out=str(tmp_path / "nfbs.json"))
    train = d["training"]
    assert [e["image"].split("/")[0] for e in train] == sorted(ids)
    assert train[0] == {
        "image": "A00019888/sub-A00019888_ses-NFB3_T1w.nii.gz",
        "label": "A00019888/sub-A00019888_ses-NFB3_T1w_brainmask.nii.gz",
        "fold": train[0]["fold"],
    }
    _assert_balanced(train)
    loaded = load_decathlon_datalist(tmp_path / "nfbs.json", True, "training", base_dir=tmp_path)
    assert all(os.path.isfile(e["image"]) and os.path.isfile(e["label"]) for e in loaded)


def test_nfbs_missing_file(tmp_path: Path) -> None:
    _make_nfbs(tmp_path, ["A1", "A2"])
    (tmp_path / "A2" / "sub-A2_ses-NFB3_T1w_brainmask.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        datalists.nfbs(str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / "A2") in msg and "sub-A2_ses-NFB3_T1w_brainmask.nii.gz" in msg
    assert "\n" not in msg


# --------------------------------------------------------------------------------------- COVIDx
def _write_covidx(root: Path) -> None:
    train = [
        "419639-003251 MIDRC-RICORD-1C-419639-003251-46647-0.png positive ricord",
        "419639-003251 MIDRC-RICORD-1C-419639-003251-46647-1.png positive ricord",
        "419639-003251 MIDRC-RICORD-1C-419639-003251-46647-2.png positive ricord",
        "5 ARDSSevere.png negative cohen",
        "",
        "313b 313b-a.jpg negative cohen",
        "313b 313b-b.JPEG negative cohen",
        "ANON56 CR.1.2.840.png negative actmed",
    ]
    train += [f"p{i} p{i}.png {'positive' if i % 3 == 0 else 'negative'} rsna" for i in range(20)]
    (root / "train_COVIDx8B.txt").write_text("\n".join(train) + "\n\n")
    test = ["t1 t1.png positive ricord", "t2 t2.png negative rsna"]
    (root / "test_COVIDx8B.txt").write_text("\n".join(test) + "\n")


def test_covidx_parse_and_patient_folds(tmp_path: Path) -> None:
    _write_covidx(tmp_path)
    d = datalists.covidx(str(tmp_path), out=str(tmp_path / "covidx.json"))
    train = d["training"]
    assert len(train) == 27
    assert train[0] == {
        "image": "train/MIDRC-RICORD-1C-419639-003251-46647-0.png",
        "label": 1,
        "fold": train[0]["fold"],
    }
    assert {e["label"] for e in train if e["image"] == "train/ARDSSevere.png"} == {0}
    # all images of one patient in one fold
    assert len({e["fold"] for e in train if "419639-003251" in e["image"]}) == 1
    assert len({e["fold"] for e in train if "313b" in e["image"]}) == 1
    assert set(Counter(e["fold"] for e in train)) == set(range(5))
    positives = Counter(e["fold"] for e in train if e["label"] == 1)
    assert set(positives) == set(range(5))  # positives spread over every fold
    assert d["testing"] == [{"image": "test/t1.png", "label": 1}, {"image": "test/t2.png", "label": 0}]
    assert datalists.covidx(str(tmp_path)) == d
    loaded = load_decathlon_datalist(tmp_path / "covidx.json", False, "testing", base_dir="/c")
    assert loaded[0] == {"image": os.path.normpath("/c/test/t1.png"), "label": 1}


def test_covidx_malformed_line(tmp_path: Path) -> None:
    _write_covidx(tmp_path)
    path = tmp_path / "test_COVIDx8B.txt"
    path.write_text("t1 t1.png positive ricord\n\nt2 t2.png maybe rsna\n")
    with pytest.raises(ValueError) as err:
        datalists.covidx(str(tmp_path))
    assert str(path) in str(err.value) and "line 3" in str(err.value)
    path.write_text("t1 t1.png positive\n")
    with pytest.raises(ValueError, match="line 1"):
        datalists.covidx(str(tmp_path))


# ------------------------------------------------------------------------------------------ MSD
def test_msd_dataset_json(tmp_path: Path) -> None:
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
    d = datalists.msd(str(tmp_path), out=str(tmp_path / "msd.json"))
    assert d["name"] == "PROSTATE" and d["labels"] == src["labels"] and d["modality"] == src["modality"]
    assert d["description"] == src["description"]
    assert len(d["training"]) == 7
    assert d["training"][0]["image"] == "imagesTr/prostate_16.nii.gz"
    assert d["training"][0]["label"] == "labelsTr/prostate_16.nii.gz"
    assert not any("._" in e["image"] or "._" in e["label"] for e in d["training"])
    _assert_balanced(d["training"])
    assert d["testing"] == [
        {"image": "imagesTs/prostate_08.nii.gz"},
        {"image": "imagesTs/prostate_22.nii.gz"},
    ]
    loaded = load_decathlon_datalist(tmp_path / "msd.json", True, "testing")
    assert loaded[1]["image"] == os.path.normpath(str(tmp_path / "imagesTs/prostate_22.nii.gz"))


# ------------------------------------------------------------------------------------ load_fold
def test_load_fold_splits(tmp_path: Path) -> None:
    datalists.brats(out=str(tmp_path / "brats.json"))
    f = str(tmp_path / "brats.json")
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
    _write_covidx(tmp_path)
    datalists.covidx(str(tmp_path), out=str(tmp_path / "c.json"))
    test = datalists.load_fold(str(tmp_path / "c.json"), str(tmp_path), 0, "test")
    assert test == [
        {"image": str(tmp_path / "test" / "t1.png"), "label": 1},
        {"image": str(tmp_path / "test" / "t2.png"), "label": 0},
    ]
    val = datalists.load_fold(str(tmp_path / "c.json"), str(tmp_path), 1, "val")
    assert val and all(isinstance(e["label"], int) for e in val)


def test_cli_write_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "lits.json"
    res = subprocess.run(
        [sys.executable, "-m", "common.data.datalists", "lits", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "131 training cases" in res.stdout
    assert json.loads(out.read_text()) == datalists.lits()
