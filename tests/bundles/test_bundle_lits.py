"""LiTS liver bundle end to end on look-alike CT: fingerprint, learning, evaluation, inference, bad input, CPU
engines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import (
    ROOT,
    assert_case_pictures,
    assert_engine_record,
    assert_fp32_engines_agree,
    assert_strategy_record,
    assert_training_refuses,
    bundle_dir,
    engine_used,
    read_json,
    run_engines,
    run_workflow,
    write_dicom_series,
    write_itk_copy,
)
from monai.bundle import ConfigParser

from common.data.datalists import assign_folds, save_datalist
from common.data.fingerprint import compute
from common.datasets.lits import write_lookalike as write_lits
from common.engines import ENGINES

BUNDLE = "lits_liver_ct_segmentation"
CASES = 8
TINY = {"patch_size": [32, 32, 32], "num_workers": 0, "init_filters": 16, "cache_rate": 1.0}
WITH_FINGERPRINT = ("train.json", "inference.json")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """8 look-alike cases (volume-N.nii / segmentation-N.nii) and a 5-fold list like the committed lits.json."""
    root = tmp_path_factory.mktemp("lits")
    ds = write_lits(str(root / "LiTS"), cases=CASES, seed=0, size=48)
    folds = assign_folds(range(CASES))
    datalist = {
        "name": "LiTS look-alike",
        "labels": {"0": "background", "1": "liver", "2": "tumour"},
        "num_folds": 5,
        "training": [
            {"image": f"volume-{n}.nii", "label": f"segmentation-{n}.nii", "fold": folds[n]} for n in range(CASES)
        ],
        "testing": [],
    }
    path = save_datalist(datalist, root / "lits.json")
    return {"dataset_dir": ds, "datalist": str(path)}


def _copy_configs(dest: Path) -> Path:
    shutil.copytree(bundle_dir(BUNDLE) / "configs", dest / "configs")
    return dest


@pytest.fixture(scope="module")
def configs(data, tmp_path_factory) -> Path:
    """The bundle's configs with the fingerprint measured on the look-alike training fold (the documented step 1)."""
    dest = _copy_configs(tmp_path_factory.mktemp("lits_configs"))
    from common.data.fingerprint import fingerprint

    fingerprint(data["datalist"], data["dataset_dir"], fold=0, bundle_dir=str(dest))
    return dest / "configs"


@pytest.fixture(scope="module")
def trained(data, configs, tmp_path_factory) -> dict:
    """One short CPU training shared by the learning, evaluation and inference tests."""
    root = tmp_path_factory.mktemp("lits_bundle")
    wf = run_workflow(BUNDLE, ["train.json"], "train", root, configs_dir=configs, **data, **TINY, epochs=12,
                      val_interval=4, learning_rate=3e-3, num_samples=4)
    best = wf.parser.get_parsed_content("validate#evaluator").state.best_metric
    return {"root": root, "best_val_dice": best, "fingerprint": wf.parser.get_parsed_content("fingerprint")}


# ------------------------------------------------------------------------------------------ fingerprint
def _expected_fingerprint(data: dict) -> dict:
    """The statistics computed directly with numpy over every training case of fold 0."""
    entries = [e for e in read_json(data["datalist"])["training"] if e["fold"] != 0]
    spacings, values = [], []
    for e in entries:
        img = nib.load(os.path.join(data["dataset_dir"], e["image"]))
        seg = np.asarray(nib.load(os.path.join(data["dataset_dir"], e["label"])).dataobj)
        spacings.append(img.header.get_zooms()[:3])  # look-alike affines are diagonal RAS
        values.append(np.asarray(img.dataobj, dtype=np.float64)[seg > 0])
    spacings, fg = np.array(spacings, dtype=np.float64), np.concatenate(values)
    return {
        "spacing": [np.median(spacings[:, 0]), np.median(spacings[:, 1]), np.percentile(spacings[:, 2], 90)],
        "clip_low": np.percentile(fg, 0.5),
        "clip_high": np.percentile(fg, 99.5),
        "mean": fg.mean(),
        "std": fg.std(),
        "num_cases": len(entries),
    }


def test_fingerprint_command_measures_the_training_fold_and_rewrites_only_its_block(data, tmp_path):
    dest = _copy_configs(tmp_path)
    cmd = [sys.executable, "-m", "common", "fingerprint", "--datalist", data["datalist"], "--dataset_dir",
           data["dataset_dir"], "--fold", "0", "--bundle_dir", str(dest), "--modality", "ct"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[fingerprint] 6/6 volume-" in proc.stderr  # progress per case

    want = _expected_fingerprint(data)
    committed = bundle_dir(BUNDLE) / "configs"
    for name in sorted(os.listdir(committed)):
        old, new = (committed / name).read_text(), (dest / "configs" / name).read_text()
        if name not in WITH_FINGERPRINT:
            assert new == old, f"{name} has no fingerprint and must not change"
            continue
        got = json.loads(new)["fingerprint"]
        np.testing.assert_allclose(got["spacing"], want["spacing"], atol=1e-4)
        for key in ("clip_low", "clip_high", "mean", "std"):
            assert got[key] == pytest.approx(want[key], abs=1e-4), key
        assert got["num_cases"] == want["num_cases"] == 6
        assert got["datalist"] == data["datalist"] and got["fold"] == 0
        # everything but the block is unchanged, text and formatting included (json indent 4)
        before, after = json.loads(old), json.loads(new)
        before.pop("fingerprint"), after.pop("fingerprint")
        assert before == after
        old_lines, new_lines = old.splitlines(), new.splitlines()
        start = next(i for i, line in enumerate(old_lines) if line.strip().startswith('"fingerprint"'))
        block = json.dumps(got, indent=4).splitlines()
        assert len(new_lines) == len(old_lines)
        assert new_lines[:start] == old_lines[:start]
        assert new_lines[start + len(block):] == old_lines[start + len(block):]
        indent = " " * (len(new_lines[start]) - len(new_lines[start].lstrip()))
        assert new_lines[start + 1 : start + len(block) - 1] == [indent + line for line in block[1:-1]]
        assert new_lines[start + len(block) - 1].rstrip(",") == indent + "}"


def test_fingerprint_samples_voxels_but_keeps_exact_moments(data):
    exact = _expected_fingerprint(data)
    sampled = compute(data["datalist"], data["dataset_dir"], fold=0, samples_per_case=500, verbose=False)
    assert sampled["mean"] == pytest.approx(exact["mean"], abs=1e-4)  # moments use every voxel
    assert sampled["std"] == pytest.approx(exact["std"], abs=1e-4)
    spread = exact["clip_high"] - exact["clip_low"]
    assert abs(sampled["clip_low"] - exact["clip_low"]) < 0.1 * spread  # percentiles from 500 voxels/case
    assert abs(sampled["clip_high"] - exact["clip_high"]) < 0.1 * spread


@pytest.mark.parametrize("config,key", [("train.json", "train#deterministic_transforms"),
                                        ("inference.json", "preprocessing#transforms")])
def test_preprocessing_resamples_to_the_fingerprint_then_clips_and_zscores(configs, config, key):
    parser = ConfigParser()
    parser.read_config(str(configs / config))
    fp = parser.get_parsed_content("fingerprint")
    transforms = {type(t).__name__: t for t in parser.get_parsed_content(key)}
    np.testing.assert_allclose(transforms["Spacingd"].spacing_transform.pixdim, fp["spacing"])
    hu = torch.linspace(-1000.0, 1000.0, 201)[None]
    got = transforms["ScaleIntensityRanged"]({"image": hu})["image"]
    want = (np.clip(hu.numpy(), fp["clip_low"], fp["clip_high"]) - fp["mean"]) / fp["std"]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------- train/eval/infer
def test_training_learns_the_liver(trained):
    assert trained["best_val_dice"] >= 0.8
    assert trained["fingerprint"]["num_cases"] == 6  # trained with the measured, not the placeholder, statistics
    models = trained["root"] / "models"
    assert (models / "model.pt").exists()
    assert (models / "last_checkpoint_epoch=12.pt").exists()


def test_evaluate_scores_every_strategy_and_records_the_best(data, configs, trained):
    root = trained["root"]
    run_workflow(BUNDLE, ["train.json", "evaluate.json"], "train", root, configs_dir=configs, **data, **TINY)
    summary = dict(line.strip().split(",") for line in open(root / "eval" / "metrics.csv"))
    assert float(summary["val_mean_dice"]) >= 0.8
    for metric in ("val_hd95", "val_asd", "val_mean_dice_largest_component", "val_mean_dice_morphological"):
        assert metric in summary
    per_case = (root / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()
    assert per_case[0].startswith("filename") and len(per_case) == 1 + 2  # fold 0 holds 2 of the 8 cases
    assert "volume-" in per_case[1]
    stats = (root / "eval" / "val_hd95_summary.csv").read_text()
    assert "mean" in stats and "median" in stats and "std" in stats
    assert_strategy_record(root / "eval", root / "models" / "postprocessing.json")  # scores = metrics.csv
    assert_case_pictures(root / "eval")


def test_inference_writes_liver_masks_on_the_input_grid(data, configs, trained, tmp_path):
    inputs = tmp_path / "in"
    shutil.copytree(data["dataset_dir"], inputs)  # volumes and segmentations: only volumes must be picked up
    shutil.copy(inputs / "volume-0.nii", inputs / "test-volume-0.nii")  # the challenge's test-set naming
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json"], "infer", trained["root"], configs_dir=configs, dataset_dir=str(inputs),
                 output_dir=str(out), patch_size=[32, 32, 32], init_filters=16)
    preds = sorted(p.name for p in out.glob("*_seg.nii.gz"))
    assert preds == sorted([f"volume-{n}_seg.nii.gz" for n in range(CASES)] + ["test-volume-0_seg.nii.gz"])
    dices = []
    for name in preds:
        n = name.split("-")[-1].split("_")[0]
        image = nib.load(inputs / name.replace("_seg.nii.gz", ".nii"))
        truth = np.asarray(nib.load(inputs / f"segmentation-{n}.nii").dataobj) > 0  # liver + tumour
        pred = nib.load(out / name)
        assert pred.shape == image.shape
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-4)
        values = np.asarray(pred.dataobj)
        assert set(np.unique(values).tolist()) <= {0, 1}
        p = values > 0
        dices.append(2 * (p & truth).sum() / (p.sum() + truth.sum()))
    assert np.mean(dices) >= 0.8


def test_nrrd_mha_and_dicom_series_get_the_mask_of_the_nifti(data, configs, trained, tmp_path):
    """volume-0 as NRRD, MHA and a CT DICOM series folder (Hounsfield units kept): each mask lands on the input's
    grid and is the NIfTI one's."""
    src = Path(data["dataset_dir"]) / "volume-0.nii"
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(src, inputs / "volume-0.nii")
    write_itk_copy(src, inputs / "volume-1.nrrd")
    write_itk_copy(src, inputs / "volume-2.mha")
    write_dicom_series(src, inputs / "volume-3", scale=None, modality="CT")
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json"], "infer", trained["root"], configs_dir=configs, dataset_dir=str(inputs),
                 output_dir=str(out), patch_size=[32, 32, 32], init_filters=16)
    image = nib.load(src)
    masks = {}
    for n in range(4):
        pred = nib.load(out / f"volume-{n}_seg.nii.gz")
        assert pred.shape == image.shape, n
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-3, err_msg=str(n))
        masks[n] = np.asarray(pred.dataobj)
    assert masks[0].any()
    for n in (1, 2, 3):
        np.testing.assert_array_equal(masks[n], masks[0], err_msg=str(n))


# ------------------------------------------------------------------------------------------------- engines
@pytest.fixture(scope="module")
def exported(data, configs, trained, tmp_path_factory) -> dict:
    """pocket engines (with the fingerprinted configs) on a copy of the trained model; the trained root keeps
    inferring with torch."""
    return run_engines(str(configs.parent), data, trained["root"], tmp_path_factory.mktemp("lits_engines"), **TINY)


def test_engines_command_records_the_fastest_good_engine(exported):
    record = assert_engine_record(exported)
    assert record["metric"] == "val_mean_dice" and record["cases_scored"] == 2  # fold 0's validation cases
    assert record["scores"]["torch"]["metric"] >= 0.8
    assert set(record["bytes_per_voxel"]) == set(ENGINES)


def test_inference_with_each_engine_writes_masks_on_the_input_grid_and_agrees_with_torch(data, configs, exported,
                                                                                         tmp_path):
    preds = {}
    for engine in ENGINES:
        out = tmp_path / engine
        wf = run_workflow(BUNDLE, ["inference.json"], "infer", exported["root"], configs_dir=configs,
                          dataset_dir=data["dataset_dir"], output_dir=str(out), patch_size=[32, 32, 32],
                          init_filters=16, engine=engine)
        assert engine_used(wf) == engine  # the export ran, not the torch fallback
        names = sorted(p.name for p in out.glob("*_seg.nii.gz"))
        assert names == sorted(f"volume-{n}_seg.nii.gz" for n in range(CASES)), engine  # one per volume
        preds[engine] = {}
        for name in names:
            image = nib.load(Path(data["dataset_dir"]) / name.replace("_seg.nii.gz", ".nii"))
            pred = nib.load(out / name)
            assert pred.shape == image.shape, (engine, name)
            np.testing.assert_allclose(pred.affine, image.affine, atol=1e-4)
            preds[engine][name] = np.asarray(pred.dataobj)
    assert_fp32_engines_agree(preds)
    assert any(m.any() for m in preds["openvino_int8"].values())  # INT8 finds the liver too


# --------------------------------------------------------------------------------------- bad input
def _break(label: Path, how: str) -> None:
    lab = nib.load(label)
    arr = np.asarray(lab.dataobj).copy()
    if how == "grid":
        nib.save(nib.Nifti1Image(arr[:, :, :-3], lab.affine), label)
    elif how == "values":
        arr[arr == 2] = 3
        arr[arr.shape[0] // 2, arr.shape[1] // 2, arr.shape[2] // 2] = 3  # in case the liver has no tumour
        nib.save(nib.Nifti1Image(arr, lab.affine), label)
    else:
        raise ValueError(how)


@pytest.mark.parametrize(
    "how,words", [("grid", "does not match its image"), ("values", "unexpected label values [3]")]
)
def test_bad_input_is_refused_before_training(data, configs, tmp_path, how, words):
    ds = tmp_path / "LiTS"
    shutil.copytree(data["dataset_dir"], ds)
    victim = next(e for e in read_json(data["datalist"])["training"] if e["fold"] != 0)  # a training case
    bad_file = str(ds / victim["label"])
    _break(Path(bad_file), how)
    assert_training_refuses(BUNDLE, tmp_path / "bundle", bad_file, words,
                            configs_dir=configs, dataset_dir=str(ds), datalist=data["datalist"], **TINY)


@pytest.mark.slow
def test_the_short_paper_2d_preset_learns_the_liver_slice_by_slice(data, configs, tmp_path):
    """train_short_2d.json (the MICCAI-workshop PocketNet's LiTS setting): a 2D network, no normalisation, on axial
    slices windowed to [-100, 200] HU; evaluation and inference run it slice by slice and write 3D masks."""
    from monai.inferers import SliceInferer
    from torch import nn

    root = tmp_path / "short2d"
    wf = run_workflow(BUNDLE, ["train.json", "train_short_2d.json"], "train", root, configs_dir=configs, **data,
                      patch_size=[48, 48, 1], num_workers=0, cache_rate=1.0, epochs=40, val_interval=10,
                      learning_rate=3e-3, num_samples=8)
    net = wf.parser.get_parsed_content("network_def")
    assert isinstance(net.head, nn.Conv2d)
    assert not [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._NormBase | nn.GroupNorm)]
    window = wf.parser.get_parsed_content("fingerprint")
    assert (window["clip_low"], window["clip_high"]) == (-100.0, 200.0)
    batch = next(iter(wf.parser.get_parsed_content("train#dataloader")))
    assert batch["image"].ndim == 4 and tuple(batch["image"].shape[2:]) == (48, 48)  # 2D slices
    assert wf.parser.get_parsed_content("validate#evaluator").state.best_metric >= 0.8
    assert read_json(root / "models" / "training_params.json")["spatial_dims"] == 2
    ev = run_workflow(BUNDLE, ["train.json", "train_short_2d.json", "evaluate.json"], "train", root,
                      configs_dir=configs, **data, num_workers=0)
    assert isinstance(ev.parser.get_parsed_content("validate#inferer"), SliceInferer)
    summary = dict(line.strip().split(",") for line in open(root / "eval" / "metrics.csv"))
    assert float(summary["val_mean_dice"]) >= 0.8
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json", "inference_short_2d.json"], "infer", root, configs_dir=configs,
                 dataset_dir=data["dataset_dir"], output_dir=str(out), engine="torch")
    image = nib.load(os.path.join(data["dataset_dir"], "volume-0.nii"))
    truth = np.asarray(nib.load(os.path.join(data["dataset_dir"], "segmentation-0.nii")).dataobj) > 0
    pred = nib.load(out / "volume-0_seg.nii.gz")
    assert pred.shape == image.shape
    p = np.asarray(pred.dataobj) > 0
    assert 2 * (p & truth).sum() / (p.sum() + truth.sum()) >= 0.8
