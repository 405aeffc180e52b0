"""NFBS: the data list read from a download, and the look-alike writer (layout, content, list round trip)."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from lookalike_checks import SMALL, check_geometry, confusable_shell, effect_size, load, paths_exist, same_grid, shell
from monai.data import load_decathlon_datalist

from common.data.datalists import load_fold
from common.datasets import nfbs


def _make_nfbs(root: Path, ids: list[str]) -> None:
    for sid in ids:
        (root / sid).mkdir(parents=True)
        for suffix in ("", "_brain", "_brainmask"):
            (root / sid / f"sub-{sid}_ses-NFB3_T1w{suffix}.nii.gz").write_bytes(b"x")


# ----------------------------------------------------------------------------------------- data list
def test_scan(tmp_path: Path) -> None:
    ids = ["A00028185", "A00019888", "A00055447", "A00032875", "A00060925", "A00061204", "A00057965"]
    _make_nfbs(tmp_path, ids)
    (tmp_path / "README.txt").write_text("not a subject")
    d = nfbs.build_datalist(str(tmp_path), out=str(tmp_path / "nfbs.json"))
    train = d["training"]
    assert [e["image"].split("/")[0] for e in train] == sorted(ids)
    assert train[0] == {
        "image": "A00019888/sub-A00019888_ses-NFB3_T1w.nii.gz",
        "label": "A00019888/sub-A00019888_ses-NFB3_T1w_brainmask.nii.gz",
        "fold": train[0]["fold"],
    }
    sizes = Counter(e["fold"] for e in train)
    assert set(sizes) == set(range(5)) and max(sizes.values()) - min(sizes.values()) <= 1
    loaded = load_decathlon_datalist(tmp_path / "nfbs.json", True, "training", base_dir=tmp_path)
    assert all(os.path.isfile(e["image"]) and os.path.isfile(e["label"]) for e in loaded)


def test_missing_file(tmp_path: Path) -> None:
    _make_nfbs(tmp_path, ["A1", "A2"])
    (tmp_path / "A2" / "sub-A2_ses-NFB3_T1w_brainmask.nii.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        nfbs.build_datalist(str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / "A2") in msg and "sub-A2_ses-NFB3_T1w_brainmask.nii.gz" in msg
    assert "\n" not in msg


def test_no_subjects_or_no_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="contains no subject folders"):
        nfbs.build_datalist(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        nfbs.build_datalist(str(tmp_path / "missing"))


# ---------------------------------------------------------------------------------------- look-alike
@pytest.fixture(scope="module")
def lookalike(tmp_path_factory: pytest.TempPathFactory) -> str:
    return nfbs.write_lookalike(str(tmp_path_factory.mktemp("nfbs")), cases=3, seed=0, size=SMALL)


def test_lookalike_layout_and_content(lookalike: str) -> None:
    assert os.path.basename(lookalike) == "NFBS_Dataset"
    ids = sorted(os.listdir(lookalike))
    assert len(ids) == 3 and all(re.fullmatch(r"A\d{8}", i) for i in ids)
    t1s = []
    for sid in ids:
        stem = f"sub-{sid}_ses-NFB3_T1w"
        assert sorted(os.listdir(os.path.join(lookalike, sid))) == sorted(
            [f"{stem}.nii.gz", f"{stem}_brain.nii.gz", f"{stem}_brainmask.nii.gz"]
        )
        folder = os.path.join(lookalike, sid)
        t1, brain, mask = (load(os.path.join(folder, f"{stem}{s}.nii.gz")) for s in ("", "_brain", "_brainmask"))
        same_grid(t1, mask)
        same_grid(brain, mask)
        assert mask.get_data_dtype() == np.uint8
        m = np.asarray(mask.dataobj)
        a, b = np.asarray(t1.dataobj), np.asarray(brain.dataobj)
        assert set(np.unique(m).tolist()) == {0, 1}
        assert 0.05 < m.mean() < 0.7
        assert a.min() >= 0
        np.testing.assert_array_equal(b, np.where(m > 0, a, 0))
        assert a[m == 0].max() > 0  # the raw T1 still has the skull and scalp
        assert effect_size(a[m > 0], a[shell(m > 0)]) > 1.0
        t1s.append(t1)
    check_geometry(t1s)


def test_lookalike_lists_like_the_real_download(lookalike: str, tmp_path: Path) -> None:
    """The list builder reads the look-alike as it reads the real download: every subject, every file there."""
    out = tmp_path / "nfbs.json"
    d = nfbs.build_datalist(lookalike, out=str(out))
    assert [e["image"].split("/")[0] for e in d["training"]] == sorted(os.listdir(lookalike))
    assert paths_exist(load_fold(str(out), lookalike, 0, "all"))


def test_hard_lookalike_hides_the_outline_and_keeps_the_layout(lookalike: str, tmp_path: Path) -> None:
    """The hard mode (for telling training recipes apart): same files and subjects, an outline much harder to
    find by intensity (muscle and dura like grey matter, thin CSF) and a more convoluted mask."""
    hard = nfbs.write_lookalike(str(tmp_path), cases=3, seed=0, size=SMALL, hard=True)
    assert sorted(os.listdir(hard)) == sorted(os.listdir(lookalike))
    for sid in sorted(os.listdir(hard)):
        stem = f"{sid}/sub-{sid}_ses-NFB3_T1w"
        t1, mask, t1_easy, mask_easy = [np.asarray(load(f"{root}/{stem}{s}.nii.gz").dataobj)
                                        for root in (hard, lookalike) for s in ("", "_brainmask")]
        assert set(np.unique(mask).tolist()) == {0, 1} and 0.05 < mask.mean() < 0.7
        np.testing.assert_array_equal(np.asarray(load(f"{hard}/{stem}_brain.nii.gz").dataobj),
                                      np.where(mask > 0, t1, 0))
        easy, difficult = confusable_shell(t1_easy, mask_easy > 0), confusable_shell(t1, mask > 0)
        assert easy < 0.05 and difficult > 0.2, (sid, easy, difficult)
