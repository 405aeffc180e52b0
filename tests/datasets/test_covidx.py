"""COVIDx V8B: the data list read from the split files, the look-alike writer, grey loading and the CSV."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from lookalike_checks import paths_exist
from monai.data import load_decathlon_datalist
from PIL import Image
from scipy import ndimage

from common.data.datalists import load_fold
from common.datasets import covidx


def _write_split_files(root: Path) -> None:
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


# ----------------------------------------------------------------------------------------- data list
def test_parse_and_patient_folds(tmp_path: Path) -> None:
    _write_split_files(tmp_path)
    d = covidx.build_datalist(str(tmp_path), out=str(tmp_path / "covidx.json"))
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
    assert covidx.build_datalist(str(tmp_path)) == d
    loaded = load_decathlon_datalist(tmp_path / "covidx.json", False, "testing", base_dir="/c")
    assert loaded[0] == {"image": os.path.normpath("/c/test/t1.png"), "label": 1}


def test_malformed_line(tmp_path: Path) -> None:
    _write_split_files(tmp_path)
    path = tmp_path / "test_COVIDx8B.txt"
    path.write_text("t1 t1.png positive ricord\n\nt2 t2.png maybe rsna\n")
    with pytest.raises(ValueError) as err:
        covidx.build_datalist(str(tmp_path))
    assert str(path) in str(err.value) and "line 3" in str(err.value)
    path.write_text("t1 t1.png positive\n")
    with pytest.raises(ValueError, match="line 1"):
        covidx.build_datalist(str(tmp_path))
    path.unlink()
    with pytest.raises(FileNotFoundError, match="test_COVIDx8B.txt"):
        covidx.build_datalist(str(tmp_path))


# ---------------------------------------------------------------------------------------- look-alike
@pytest.fixture(scope="module")
def lookalike(tmp_path_factory: pytest.TempPathFactory) -> str:
    return covidx.write_lookalike(str(tmp_path_factory.mktemp("covidx")), cases=10, seed=0, size=96)


def test_lookalike_split_files(lookalike: str) -> None:
    assert sorted(os.listdir(lookalike)) == ["test", "test_COVIDx8B.txt", "train", "train_COVIDx8B.txt"]
    seen, labels, exts, modes, sizes = set(), {"train": [], "test": []}, set(), set(), set()
    for split in ("train", "test"):
        with open(os.path.join(lookalike, f"{split}_COVIDx8B.txt")) as f:
            lines = f.read().splitlines()
        assert lines and all(line.strip() == line and line for line in lines)
        names = []
        for line in lines:
            fields = line.split(" ")
            assert len(fields) == 4, line
            pid, fname, label, source = line.rsplit(maxsplit=3)
            assert label in ("positive", "negative") and source in ("ricord", "rsna", "cohen", "actmed")
            assert pid and fname not in seen
            seen.add(fname)
            names.append(fname)
            labels[split].append(label)
            with Image.open(os.path.join(lookalike, split, fname)) as im:
                im.load()
                modes.add(im.mode)
                sizes.add(im.size)
                assert im.format == ("JPEG" if fname.lower().endswith((".jpg", ".jpeg")) else "PNG")
            exts.add(os.path.splitext(fname)[1])
        assert sorted(os.listdir(os.path.join(lookalike, split))) == sorted(names)
    assert len(labels["test"]) == 2 and len(labels["train"]) == 8
    assert labels["train"].count("positive") == 4 and labels["test"].count("positive") == 1
    assert {".png", ".jpg"} <= exts and modes == {"L", "RGB"} and len(sizes) > 5
    assert all(72 <= s <= 125 for size in sizes for s in size)


def test_lookalike_lists_like_the_real_download(lookalike: str, tmp_path: Path) -> None:
    out = tmp_path / "covidx.json"
    d = covidx.build_datalist(lookalike, out=str(out))
    assert len(d["training"]) == 8 and len(d["testing"]) == 2
    assert paths_exist(load_fold(str(out), lookalike, 0, "all") + load_fold(str(out), lookalike, 0, "test"))


def test_lookalike_positive_signal() -> None:
    """Same seed, same film: the positive one has brighter lungs (bilateral opacities), so it is learnable."""
    for seed in range(4):
        pos, lungs = covidx._chest_xray(np.random.default_rng(seed), 128, 112, positive=True)
        neg, lungs2 = covidx._chest_xray(np.random.default_rng(seed), 128, 112, positive=False)
        np.testing.assert_array_equal(lungs, lungs2)
        diff = pos.astype(float) - neg.astype(float)
        assert diff[lungs].mean() > 15
        half = lungs.shape[1] // 2
        assert diff[:, :half][lungs[:, :half]].mean() > 8 and diff[:, half:][lungs[:, half:]].mean() > 8
        assert np.abs(diff[~ndimage.binary_dilation(lungs, iterations=4)]).mean() < 2
        assert neg[lungs].mean() + 30 < neg[~lungs & (neg > 100)].mean()  # dark lungs in a bright thorax


# ------------------------------------------------------------------------------- loading and saving
def test_to_grey_keeps_grey_modes_and_converts_colour() -> None:
    deep = Image.fromarray(np.full((4, 4), 4000, dtype=np.uint16))
    assert covidx.to_grey(deep) is deep  # 16-bit films keep their range
    rgb = Image.new("RGB", (4, 4), (10, 200, 30))
    assert covidx.to_grey(rgb).mode == "L"


def test_prediction_csv_writes_named_rows(tmp_path: Path) -> None:
    rows = covidx.prediction_rows(label_key="label")(
        [{"pred": torch.tensor([0.2, 0.8]), "label": torch.tensor([0.0, 1.0])}, {"pred": torch.tensor([0.9, 0.1]),
                                                                                 "label": torch.tensor(0)}]
    )
    saver = covidx.PredictionCSV(output_dir=tmp_path, with_label=True)
    saver.save_batch(torch.stack(rows), {"filename_or_obj": ["a.png", "b.png"]})
    saver.finalize()
    with open(tmp_path / "predictions.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table == [
        ["filename", "predicted_class", "predicted_label", "probability_negative", "probability_positive", "label"],
        ["a.png", "1", "positive", "0.200000", "0.800000", "1"],
        ["b.png", "0", "negative", "0.900000", "0.100000", "0"],
    ]
    with pytest.raises(ValueError, match="rows of 3 numbers"):
        saver.save_batch(torch.zeros(1, 2))
