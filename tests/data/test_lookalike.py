"""Tests of the look-alike dataset writers: exact layouts, formats, label sets, grids, learnable contrast."""

import json
import os
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from common.data import lookalike

SMALL = 32  # grid size used here: keeps the whole file fast


def _load(path: str) -> nib.Nifti1Image:
    img = nib.load(path)
    assert isinstance(img, nib.Nifti1Image)
    return img


def _shell(mask: np.ndarray, width: int = 3) -> np.ndarray:
    """Background voxels just around the foreground: the hardest background to tell apart."""
    return ndimage.binary_dilation(mask, iterations=width) & ~mask


def _effect_size(a: np.ndarray, b: np.ndarray) -> float:
    """|mean difference| / pooled std, a scale-free measure of how separable two intensity sets are."""
    a, b = a.astype(float), b.astype(float)
    return abs(a.mean() - b.mean()) / np.sqrt(0.5 * (a.var() + b.var()) + 1e-9)


def _same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image) -> None:
    assert a.shape[:3] == b.shape[:3]
    np.testing.assert_allclose(a.affine, b.affine)


def _check_geometry(imgs: list[nib.Nifti1Image]) -> None:
    """Spacings vary per case, are in the affine and pixdim, and the origin is not zero."""
    zooms = {tuple(np.round(i.header.get_zooms()[:3], 4)) for i in imgs}
    assert len(zooms) == len(imgs)
    for i in imgs:
        np.testing.assert_allclose(np.abs(np.diag(i.affine)[:3]), i.header.get_zooms()[:3], rtol=1e-5)
        assert np.abs(i.affine[:3, 3]).sum() > 1.0
        assert int(i.header["sform_code"]) == 1 and int(i.header["qform_code"]) == 1


# ----------------------------------------------------------------------------------------------------------
# NFBS
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nfbs(tmp_path_factory: pytest.TempPathFactory) -> str:
    return lookalike.write_nfbs(str(tmp_path_factory.mktemp("nfbs")), cases=3, seed=0, size=SMALL)


def test_nfbs_layout_and_content(nfbs: str) -> None:
    assert os.path.basename(nfbs) == "NFBS_Dataset"
    ids = sorted(os.listdir(nfbs))
    assert len(ids) == 3 and all(re.fullmatch(r"A\d{8}", i) for i in ids)
    t1s = []
    for sid in ids:
        stem = f"sub-{sid}_ses-NFB3_T1w"
        assert sorted(os.listdir(os.path.join(nfbs, sid))) == sorted(
            [f"{stem}.nii.gz", f"{stem}_brain.nii.gz", f"{stem}_brainmask.nii.gz"]
        )
        t1, brain, mask = (_load(os.path.join(nfbs, sid, f"{stem}{s}.nii.gz")) for s in ("", "_brain", "_brainmask"))
        _same_grid(t1, mask)
        _same_grid(brain, mask)
        assert mask.get_data_dtype() == np.uint8
        m = np.asarray(mask.dataobj)
        a, b = np.asarray(t1.dataobj), np.asarray(brain.dataobj)
        assert set(np.unique(m).tolist()) == {0, 1}
        assert 0.05 < m.mean() < 0.7
        assert a.min() >= 0
        np.testing.assert_array_equal(b, np.where(m > 0, a, 0))
        assert a[m == 0].max() > 0  # the raw T1 still has the skull and scalp
        assert _effect_size(a[m > 0], a[_shell(m > 0)]) > 1.0
        t1s.append(t1)
    _check_geometry(t1s)


# ----------------------------------------------------------------------------------------------------------
# LiTS
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lits(tmp_path_factory: pytest.TempPathFactory) -> str:
    return lookalike.write_lits(str(tmp_path_factory.mktemp("lits")), cases=4, seed=0, size=SMALL)


def test_lits_layout_and_content(lits: str) -> None:
    expected = {f"volume-{n}.nii" for n in range(4)} | {f"segmentation-{n}.nii" for n in range(4)}
    assert set(os.listdir(lits)) == expected
    vols, n_tumour = [], 0
    for n in range(4):
        vol, seg = _load(os.path.join(lits, f"volume-{n}.nii")), _load(os.path.join(lits, f"segmentation-{n}.nii"))
        _same_grid(vol, seg)
        assert vol.get_data_dtype() == np.int16 and seg.get_data_dtype() == np.uint8
        ct, lab = np.asarray(vol.dataobj), np.asarray(seg.dataobj)
        assert set(np.unique(lab).tolist()) <= {0, 1, 2} and (lab == 1).any()
        assert ct.min() < -900 and ct[0, 0].mean() < -900  # air outside the body
        assert ct.max() > 400  # bone
        liver = ct[lab == 1]
        assert 35 < np.median(liver) < 85
        # most voxels around the liver fall outside the liver's own intensity range (fat, bone, muscle)
        lo, hi = np.percentile(liver, [5, 95])
        around = ct[_shell(lab > 0)]
        assert ((around >= lo) & (around <= hi)).mean() < 0.35
        if (lab == 2).any():
            n_tumour += 1
            assert np.median(ct[lab == 2]) < np.median(liver) - 10
            # tumours lie inside the liver: every tumour voxel's neighbours are liver or tumour
            assert set(np.unique(lab[ndimage.binary_dilation(lab == 2)]).tolist()) <= {1, 2}
        vols.append(vol)
    assert n_tumour >= 1
    _check_geometry(vols)


# ----------------------------------------------------------------------------------------------------------
# BraTS 2020
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def brats(tmp_path_factory: pytest.TempPathFactory) -> str:
    return lookalike.write_brats(str(tmp_path_factory.mktemp("brats")), seed=0, size=SMALL, ids=[354, 355])


def test_brats_layout_and_quirk(brats: str) -> None:
    assert os.path.basename(brats) == "MICCAI_BraTS2020_TrainingData"
    assert sorted(os.listdir(brats)) == ["BraTS20_Training_354", "BraTS20_Training_355", "name_mapping.csv"]
    mods = ["flair", "t1", "t1ce", "t2"]
    assert sorted(os.listdir(os.path.join(brats, "BraTS20_Training_354"))) == sorted(
        [f"BraTS20_Training_354_{m}.nii" for m in [*mods, "seg"]]
    )
    assert sorted(os.listdir(os.path.join(brats, "BraTS20_Training_355"))) == sorted(
        [f"BraTS20_Training_355_{m}.nii" for m in mods] + ["W39_1998.09.19_Segm.nii"]
    )


def test_brats_content(brats: str) -> None:
    segs = []
    for n, seg_name in [(354, "BraTS20_Training_354_seg.nii"), (355, "W39_1998.09.19_Segm.nii")]:
        folder = os.path.join(brats, f"BraTS20_Training_{n}")
        seg = _load(os.path.join(folder, seg_name))
        lab = np.asarray(seg.dataobj)
        assert seg.get_data_dtype() == np.uint8
        assert set(np.unique(lab).tolist()) == {0, 1, 2, 4}
        # nesting of a real glioma: necrosis only touches the enhancing rim, the core only edema
        assert set(np.unique(lab[ndimage.binary_dilation(lab == 1)]).tolist()) <= {1, 4}
        core = (lab == 1) | (lab == 4)
        assert set(np.unique(lab[ndimage.binary_dilation(core)]).tolist()) <= {1, 2, 4}
        imgs = {}
        for m in ["flair", "t1", "t1ce", "t2"]:
            img = _load(os.path.join(folder, f"BraTS20_Training_{n}_{m}.nii"))
            _same_grid(img, seg)
            imgs[m] = np.asarray(img.dataobj).astype(float)
            assert imgs[m].min() >= 0
        brain = imgs["flair"] > 0
        for m, a in imgs.items():  # skull-stripped: same brain support in every modality, zero outside
            np.testing.assert_array_equal(a > 0, brain, err_msg=m)
        assert not brain[0, 0, 0] and np.all(brain[lab > 0])
        wt = lab > 0
        assert _effect_size(imgs["flair"][wt], imgs["flair"][brain & ~wt]) > 1.0
        assert imgs["flair"][wt].mean() > imgs["flair"][brain & ~wt].mean()
        assert imgs["t1ce"][lab == 4].mean() > 1.5 * imgs["t1ce"][lab == 2].mean()
        assert imgs["t2"][lab == 2].mean() > imgs["t2"][brain & ~wt].mean()
        segs.append(seg)
    _check_geometry(segs)


def test_brats_case_independent_of_others(tmp_path) -> None:
    """Case 355 is drawn from (seed, 355): asking for it alone gives the same volume."""
    root = lookalike.write_brats(str(tmp_path), seed=0, size=SMALL, ids=[355])
    a = np.asarray(_load(os.path.join(root, "BraTS20_Training_355", "W39_1998.09.19_Segm.nii")).dataobj)
    assert a.shape[0] > 0 and (a == 4).any()


def test_brats_default_numbering(tmp_path) -> None:
    root = lookalike.write_brats(str(tmp_path), cases=2, size=24)
    assert sorted(os.listdir(root)) == ["BraTS20_Training_001", "BraTS20_Training_002", "name_mapping.csv"]


# ----------------------------------------------------------------------------------------------------------
# COVIDx
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def covidx(tmp_path_factory: pytest.TempPathFactory) -> str:
    return lookalike.write_covidx(str(tmp_path_factory.mktemp("covidx")), cases=10, seed=0, size=96)


def test_covidx_split_files(covidx: str) -> None:
    assert sorted(os.listdir(covidx)) == ["test", "test_COVIDx8B.txt", "train", "train_COVIDx8B.txt"]
    seen, labels, exts, modes, sizes = set(), {"train": [], "test": []}, set(), set(), set()
    for split in ("train", "test"):
        with open(os.path.join(covidx, f"{split}_COVIDx8B.txt")) as f:
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
            with Image.open(os.path.join(covidx, split, fname)) as im:
                im.load()
                modes.add(im.mode)
                sizes.add(im.size)
                assert im.format == ("JPEG" if fname.lower().endswith((".jpg", ".jpeg")) else "PNG")
            exts.add(os.path.splitext(fname)[1])
        assert sorted(os.listdir(os.path.join(covidx, split))) == sorted(names)
    assert len(labels["test"]) == 2 and len(labels["train"]) == 8
    assert labels["train"].count("positive") == 4 and labels["test"].count("positive") == 1
    assert {".png", ".jpg"} <= exts and modes == {"L", "RGB"} and len(sizes) > 5
    assert all(72 <= s <= 125 for size in sizes for s in size)


def test_covidx_positive_signal() -> None:
    """Same seed, same film: the positive one has brighter lungs (bilateral opacities), so it is learnable."""
    for seed in range(4):
        pos, lungs = lookalike._chest_xray(np.random.default_rng(seed), 128, 112, positive=True)
        neg, lungs2 = lookalike._chest_xray(np.random.default_rng(seed), 128, 112, positive=False)
        np.testing.assert_array_equal(lungs, lungs2)
        diff = pos.astype(float) - neg.astype(float)
        assert diff[lungs].mean() > 15
        half = lungs.shape[1] // 2
        assert diff[:, :half][lungs[:, :half]].mean() > 8 and diff[:, half:][lungs[:, half:]].mean() > 8
        assert np.abs(diff[~ndimage.binary_dilation(lungs, iterations=4)]).mean() < 2
        assert neg[lungs].mean() + 30 < neg[~lungs & (neg > 100)].mean()  # dark lungs in a bright thorax


# ----------------------------------------------------------------------------------------------------------
# MSD Task05 prostate
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prostate(tmp_path_factory: pytest.TempPathFactory) -> str:
    return lookalike.write_prostate(str(tmp_path_factory.mktemp("msd")), cases=4, seed=0, size=48)


def test_prostate_layout_and_json(prostate: str) -> None:
    assert os.path.basename(prostate) == "Task05_Prostate"
    assert sorted(os.listdir(prostate)) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr"]
    with open(os.path.join(prostate, "dataset.json")) as f:
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
    assert sorted(os.listdir(os.path.join(prostate, "imagesTr"))) == sorted([*tr_names, "._prostate_00.nii.gz"])
    assert sorted(os.listdir(os.path.join(prostate, "labelsTr"))) == sorted(tr_names)
    assert sorted(os.listdir(os.path.join(prostate, "imagesTs"))) == sorted(ts_names)
    with pytest.raises(Exception):  # noqa: B017 - the junk file is not a NIfTI; loaders must skip it
        nib.load(os.path.join(prostate, "imagesTr", "._prostate_00.nii.gz")).get_fdata()
    # test images are 4D channel-last too
    for name in ts_names:
        assert _load(os.path.join(prostate, "imagesTs", name)).shape[-1] == 2


def test_prostate_content(prostate: str) -> None:
    imgs = []
    for name in sorted(f for f in os.listdir(os.path.join(prostate, "labelsTr"))):
        img, seg = _load(os.path.join(prostate, "imagesTr", name)), _load(os.path.join(prostate, "labelsTr", name))
        assert img.ndim == 4 and img.shape[-1] == 2 and seg.ndim == 3
        assert img.get_data_dtype() == np.float32 and seg.get_data_dtype() == np.uint8
        _same_grid(img, seg)
        assert img.shape[0] > 1.2 * img.shape[2] and img.shape[1] > 1.2 * img.shape[2]  # in-plane > slices
        zooms = img.header.get_zooms()
        assert zooms[2] > 3 * zooms[0] and zooms[0] == pytest.approx(zooms[1])
        data, lab = img.get_fdata(dtype=np.float32), np.asarray(seg.dataobj)
        assert set(np.unique(lab).tolist()) == {0, 1, 2}
        t2, adc = data[..., 0], data[..., 1]
        assert t2.min() >= 0 and adc.min() >= 0
        gland = lab > 0
        assert _effect_size(t2[gland], t2[_shell(gland, 1)]) > 0.7  # the dark capsule around the gland
        assert t2[lab == 1].mean() > t2[lab == 2].mean() * 1.15  # bright PZ, darker TZ
        assert adc[lab == 1].mean() > adc[lab == 2].mean()
        assert (lab > 0).any(axis=(0, 1)).sum() < lab.shape[2]  # apex/base slices without gland
        imgs.append(seg)
    _check_geometry(imgs)


# ----------------------------------------------------------------------------------------------------------
# determinism and CLI
# ----------------------------------------------------------------------------------------------------------
def _arrays(root: str) -> dict[str, np.ndarray | bytes]:
    """Every file under root as an array (images) or bytes (text files)."""
    out: dict[str, np.ndarray | bytes] = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            key = os.path.relpath(path, root)
            if f.startswith("._") or f.endswith((".txt", ".json", ".csv")):
                with open(path, "rb") as fh:
                    out[key] = fh.read()
            elif f.endswith((".nii", ".nii.gz")):
                img = _load(path)
                out[key] = np.asarray(img.dataobj)
                out[key + ":affine"] = img.affine
            else:
                with Image.open(path) as im:
                    out[key] = np.asarray(im)
    return out


_TINY = {
    "nfbs": dict(cases=2, size=20),
    "lits": dict(cases=2, size=20),
    "brats": dict(cases=2, size=24),
    "covidx": dict(cases=5, size=48),
    "prostate": dict(cases=2, size=24),
}


@pytest.mark.parametrize("task", sorted(_TINY))
def test_deterministic(task: str, tmp_path) -> None:
    write = lookalike.TASKS[task]
    a = _arrays(write(str(tmp_path / "a"), seed=3, **_TINY[task]))
    b = _arrays(write(str(tmp_path / "b"), seed=3, **_TINY[task]))
    c = _arrays(write(str(tmp_path / "c"), seed=4, **_TINY[task]))
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # another seed gives other data (file names may differ too, e.g. NFBS IDs and COVIDx names)
    shared = [k for k in a if k in c and isinstance(a[k], np.ndarray) and not k.endswith(":affine")]
    assert a.keys() != c.keys() or any(
        a[k].shape != c[k].shape or not np.array_equal(a[k], c[k]) for k in shared
    )


def test_cli(tmp_path) -> None:
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "common.data.lookalike", "nfbs", "--out", str(out), "--cases", "2", "--size", "20"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("[nfbs]") == 2
    root = out / "NFBS_Dataset"
    assert str(root) in proc.stdout
    subjects = sorted(os.listdir(root))
    assert len(subjects) == 2
    assert len(os.listdir(root / subjects[0])) == 3
