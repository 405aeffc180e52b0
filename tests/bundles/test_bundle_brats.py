"""BraTS tumour bundle end to end on look-alike data: learns, evaluates, infers, trains the TC/WT/ET regions
variant, reads case 355's odd mask name, refuses bad input before touching the model, runs the CPU engines."""

from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import (
    assert_case_pictures,
    assert_engine_record,
    assert_fp32_engines_agree,
    assert_inference_applies,
    assert_strategy_record,
    assert_training_refuses,
    bundle_dir,
    engine_used,
    read_json,
    read_per_case,
    run_engines,
    run_workflow,
    write_itk_copy,
)
from monai.bundle import ConfigParser
from monai.transforms import ConvertToMultiChannelBasedOnBratsClasses

from common.datasets.brats import find_cases, lookalike_datalist, regions_to_labels, stack_cases
from common.datasets.brats import write_lookalike as write_brats
from common.engines import ENGINES

BUNDLE = "brats_tumor_mri_segmentation"
# Case numbers of the committed list: fold 0 holds 4 and 7 (validation), the other 7 train, 355 among them.
IDS = [1, 2, 3, 4, 5, 6, 7, 8, 355]
# Tiny CPU settings; the look-alike volumes are about 32^3, their brain crop about 28^3.
TINY = {"patch_size": [16, 16, 16], "num_workers": 0, "init_filters": 8, "cache_rate": 1.0}
W39 = "W39_1998.09.19_Segm.nii"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Look-alike BraTS 2020 folder plus the committed data list cut down to the generated cases."""
    root = tmp_path_factory.mktemp("brats")
    ds = write_brats(str(root / "data"), seed=0, size=32, ids=IDS)
    return {"dataset_dir": ds, "datalist": lookalike_datalist(ds, str(root / "brats2020_lookalike.json"))}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """One short CPU training shared by the learning, evaluation and inference tests.

    64 steps of 8 patches: best validation Dice 0.93-0.97 over look-alike seeds 0-3 (0.88+ from epoch 12).
    """
    root = tmp_path_factory.mktemp("brats_bundle")
    wf = run_workflow(BUNDLE, ["train.json"], "train", root, **data, **TINY, epochs=16, val_interval=4,
                      learning_rate=5e-3, num_samples=4)
    best = wf.parser.get_parsed_content("validate#evaluator").state.best_metric
    return {"root": root, "best_val_dice": best, "train_data": wf.parser.get_parsed_content("train#data")}


def _labels(data: dict) -> dict[str, str]:
    """Case name -> absolute label path, from the data list (so case 355's alias is used)."""
    entries = read_json(data["datalist"])["training"]
    return {e["label"].split("/")[0]: os.path.join(data["dataset_dir"], e["label"]) for e in entries}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_training_learns_whole_tumour(trained):
    assert trained["best_val_dice"] >= 0.8
    models = trained["root"] / "models"
    assert (models / "model.pt").exists()
    assert (models / "last_checkpoint_epoch=16.pt").exists()


def test_case_355_mask_alias_is_trained_on(data, trained):
    case = next(e for e in trained["train_data"] if "BraTS20_Training_355" in e["label"])
    assert os.path.basename(case["label"]) == W39 and os.path.isfile(case["label"])
    assert [os.path.basename(p) for p in case["image"]] == [
        f"BraTS20_Training_355_{c}.nii" for c in ("t1", "t1ce", "t2", "flair")
    ]
    assert len(trained["train_data"]) == 7


def test_evaluate_scores_every_strategy_and_records_the_best(data, trained):
    root = trained["root"]
    run_workflow(BUNDLE, ["train.json", "evaluate.json"], "train", root, **data, **TINY)
    summary = dict(line.strip().split(",") for line in open(root / "eval" / "metrics.csv"))
    assert float(summary["val_mean_dice"]) >= 0.8
    for metric in ("val_hd95", "val_asd", "val_mean_dice_largest_component", "val_mean_dice_morphological"):
        assert metric in summary
    per_case = (root / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()
    assert per_case[0] == "filename,class0,mean" and len(per_case) == 1 + 2  # whole tumour; 2 val cases
    stats = (root / "eval" / "val_hd95_summary.csv").read_text()
    assert "mean" in stats and "median" in stats and "std" in stats
    assert_strategy_record(root / "eval", root / "models" / "postprocessing.json")  # scores = metrics.csv
    assert_case_pictures(root / "eval")  # four modalities: the first is shown


def test_inference_writes_masks_on_the_input_grid(data, trained, tmp_path):
    out = tmp_path / "pred"
    wf = run_workflow(BUNDLE, ["inference.json"], "infer", trained["root"], dataset_dir=data["dataset_dir"],
                      output_dir=str(out), patch_size=TINY["patch_size"], init_filters=TINY["init_filters"])
    record = trained["root"] / "models" / "postprocessing.json"  # written by the evaluation test, if it ran
    assert_inference_applies(wf, read_json(record)["strategy"] if record.exists() else "none")
    preds = sorted(out.glob("*.nii.gz"))
    assert [p.name for p in preds] == [f"BraTS20_Training_{n:03d}_seg.nii.gz" for n in IDS]
    labels = _labels(data)
    dices = []
    for pred_file in preds:
        case = pred_file.name[: -len("_seg.nii.gz")]
        t1 = nib.load(os.path.join(data["dataset_dir"], case, f"{case}_t1.nii"))
        pred = nib.load(pred_file)
        assert pred.shape == t1.shape
        np.testing.assert_allclose(pred.affine, t1.affine, atol=1e-4)
        values = np.asarray(pred.dataobj)
        assert set(np.unique(values).tolist()) <= {0, 1}
        dices.append(_dice(values > 0, np.asarray(nib.load(labels[case]).dataobj) > 0))
    assert np.mean(dices) >= 0.8


def test_regions_config_trains_evaluates_per_region_and_writes_brats_labels(data, tmp_path):
    """[train, regions] briefly, then evaluation with per-region Dice, then a BraTS label map per case.

    10 epochs of 7 cases x 4 patches, the best of 5 validations kept (epoch 8): mean validation Dice TC 0.86,
    WT 0.56, ET 0.49 (one thread); one epoch predicts enhancing tumour everywhere (Dice 0.00, 0.10, 0.02).
    """
    wf = run_workflow(BUNDLE, ["train.json", "regions.json"], "train", tmp_path, **data, **TINY, epochs=10,
                      val_interval=2, num_samples=4, learning_rate=5e-3)
    with torch.no_grad():
        assert wf.parser.get_parsed_content("network").eval()(torch.zeros(1, 4, 16, 16, 16)).shape[1] == 3
    models = tmp_path / "models" / "regions"  # kept apart from the whole-tumour weights
    assert (models / "model.pt").exists() and not (tmp_path / "models" / "model.pt").exists()
    run_workflow(BUNDLE, ["train.json", "evaluate.json", "regions.json"], "train", tmp_path, **data, **TINY)
    rows = (tmp_path / "eval" / "regions" / "val_mean_dice_raw.csv").read_text().splitlines()
    assert rows[0] == "filename,class0,class1,class2,mean"  # TC, WT, ET
    per_region = np.array([[float(v) for v in r.split(",")[1:4]] for r in rows[1:]])
    assert per_region.shape == (2, 3)  # the 2 validation cases, each with a Dice per region
    assert per_region.mean(axis=0).min() >= 0.3, per_region  # every region learned, not only the easiest
    assert per_region.mean() == pytest.approx(np.mean(list(read_per_case(tmp_path / "eval" / "regions").values())))
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json", "regions.json"], "infer", tmp_path, dataset_dir=data["dataset_dir"],
                 output_dir=str(out), patch_size=TINY["patch_size"], init_filters=TINY["init_filters"])
    preds = sorted(out.glob("*_seg.nii.gz"))
    assert len(preds) == len(IDS)
    labels, seen, dices = _labels(data), set(), []
    for pred_file in preds:
        case = pred_file.name[: -len("_seg.nii.gz")]
        pred = nib.load(pred_file)
        assert pred.shape == nib.load(os.path.join(data["dataset_dir"], case, f"{case}_t1.nii")).shape
        values = np.asarray(pred.dataobj)
        assert set(np.unique(values).tolist()) <= {0, 1, 2, 4}
        assert values.any(), case  # a label map, not an empty volume
        seen |= set(np.unique(values).tolist())
        dices.append(_dice(values > 0, np.asarray(nib.load(labels[case]).dataobj) > 0))
    assert {2, 4} <= seen  # edema and enhancing tumour both come back from the regions
    assert np.mean(dices) >= 0.3, dices  # the label map's whole tumour is where the tumours are


def test_regions_convert_back_to_the_brats_label_map(data):
    """TC/WT/ET of a real-layout mask (case 355's alias included) give back exactly its labels."""
    for case, label in _labels(data).items():
        seg = torch.as_tensor(np.asarray(nib.load(label).dataobj))[None].float()
        regions = ConvertToMultiChannelBasedOnBratsClasses()(seg)
        assert torch.equal(regions_to_labels(regions), seg), case


def test_inference_input_names_the_case_folder_and_the_missing_file(data, tmp_path):
    ds = tmp_path / "input"
    shutil.copytree(os.path.join(data["dataset_dir"], "BraTS20_Training_001"), ds / "BraTS20_Training_001")
    assert [os.path.basename(p) for p in find_cases(str(ds))[0]["image"]] == [
        f"BraTS20_Training_001_{c}.nii" for c in ("t1", "t1ce", "t2", "flair")
    ]
    os.remove(ds / "BraTS20_Training_001" / "BraTS20_Training_001_t1ce.nii")
    with pytest.raises(FileNotFoundError) as info:
        find_cases(str(ds))
    message = str(info.value)
    assert str(ds / "BraTS20_Training_001") in message and "BraTS20_Training_001_t1ce.nii" in message


def test_nrrd_and_mha_cases_get_the_masks_of_the_nifti_case(data, trained, tmp_path):
    """A case folder whose four channels are NRRD (another MHA) is found and predicted as its NIfTI files are."""
    case = "BraTS20_Training_004"
    inputs = tmp_path / "in"
    for suffix in (".nrrd", ".mha"):
        folder = inputs / f"{case}{suffix[1:]}"
        folder.mkdir(parents=True)
        for channel in ("t1", "t1ce", "t2", "flair"):
            write_itk_copy(os.path.join(data["dataset_dir"], case, f"{case}_{channel}.nii"),
                           folder / f"{folder.name}_{channel}{suffix}")
    shutil.copytree(os.path.join(data["dataset_dir"], case), inputs / case)
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json"], "infer", trained["root"], dataset_dir=str(inputs), output_dir=str(out),
                 engine="torch")
    reference = nib.load(out / f"{case}_seg.nii.gz")
    t1 = nib.load(os.path.join(data["dataset_dir"], case, f"{case}_t1.nii"))
    assert reference.shape == t1.shape and np.asarray(reference.dataobj).any()
    for kind in ("nrrd", "mha"):
        pred = nib.load(out / f"{case}{kind}_seg.nii.gz")
        np.testing.assert_allclose(pred.affine, t1.affine, atol=1e-3, err_msg=kind)
        np.testing.assert_array_equal(np.asarray(pred.dataobj), np.asarray(reference.dataobj), err_msg=kind)


def test_stacked_4d_file_is_read_like_the_four_files(data, tmp_path):
    """The MONAI Label route (one file per image): a stacked case preprocesses exactly like its 4 files."""
    ds = tmp_path / "input"
    shutil.copytree(os.path.join(data["dataset_dir"], "BraTS20_Training_355"), ds / "BraTS20_Training_355")
    [stacked] = stack_cases(str(ds), str(tmp_path / "studies"))
    assert nib.load(stacked).shape[-1] == 4
    mask = nib.load(tmp_path / "studies" / "labels" / "final" / "BraTS20_Training_355.nii.gz")
    original = nib.load(ds / "BraTS20_Training_355" / W39)  # case 355's alias is found as its mask
    np.testing.assert_array_equal(np.asarray(mask.dataobj), np.asarray(original.dataobj))
    parser = ConfigParser()
    parser.read_config(str(bundle_dir(BUNDLE) / "configs" / "inference.json"))
    preprocessing = parser.get_parsed_content("preprocessing")
    one = preprocessing({"image": stacked})["image"]
    four = preprocessing(find_cases(str(ds))[0])["image"]
    assert one.shape == four.shape and one.shape[0] == 4
    torch.testing.assert_close(one.as_tensor(), four.as_tensor())


@pytest.mark.parametrize(
    "how,words", [("channels", "3 channels, expected 4"), ("values", "unexpected label values [3]")]
)
def test_bad_input_is_refused_before_training(data, tmp_path, how, words):
    ds = tmp_path / "MICCAI_BraTS2020_TrainingData"
    shutil.copytree(data["dataset_dir"], ds)
    datalist = read_json(data["datalist"])
    victim = next(e for e in datalist["training"] if e["fold"] != 0)  # a training case
    if how == "channels":
        victim["image"] = victim["image"][:3]  # t1, t1ce, t2: the flair is missing from the list
        bad_file = str(ds / victim["image"][0])
    else:
        bad_file = str(ds / victim["label"])
        lab = nib.load(bad_file)
        arr = np.asarray(lab.dataobj).copy()
        assert (arr == 4).any()
        arr[arr == 4] = 3  # MSD Task01 numbers enhancing tumour 3, native BraTS 4
        nib.save(nib.Nifti1Image(arr, lab.affine), bad_file)
    datalist_file = str(tmp_path / "brats.json")
    with open(datalist_file, "w") as f:
        json.dump(datalist, f)
    assert_training_refuses(BUNDLE, tmp_path / "bundle", bad_file, words,
                            dataset_dir=str(ds), datalist=datalist_file, **TINY)


@pytest.fixture(scope="module")
def exported(data, trained, tmp_path_factory):
    """pocket engines on a copy of the trained model (the trained root keeps inferring with torch)."""
    return run_engines(BUNDLE, data, trained["root"], tmp_path_factory.mktemp("brats_engines"), **TINY)


def test_engines_command_records_the_fastest_good_engine(exported):
    record = assert_engine_record(exported)
    assert record["metric"] == "val_mean_dice" and record["cases_scored"] == 2  # cases 4 and 7
    assert record["input_shape"][:2] == [1, 4]  # the four modalities
    assert record["scores"]["torch"]["metric"] >= 0.8


def test_inference_with_each_engine_writes_masks_on_the_input_grid_and_agrees_with_torch(data, exported, tmp_path):
    preds = {}
    for engine in ENGINES:
        out = tmp_path / engine
        wf = run_workflow(BUNDLE, ["inference.json"], "infer", exported["root"], dataset_dir=data["dataset_dir"],
                          output_dir=str(out), patch_size=TINY["patch_size"], init_filters=TINY["init_filters"],
                          engine=engine)
        assert engine_used(wf) == engine  # the export ran, not the torch fallback
        files = sorted(out.glob("*.nii.gz"))
        assert [p.name for p in files] == [f"BraTS20_Training_{n:03d}_seg.nii.gz" for n in IDS], engine
        preds[engine] = {}
        for pred_file in files:
            case = pred_file.name[: -len("_seg.nii.gz")]
            t1 = nib.load(os.path.join(data["dataset_dir"], case, f"{case}_t1.nii"))
            pred = nib.load(pred_file)
            assert pred.shape == t1.shape, (engine, case)
            np.testing.assert_allclose(pred.affine, t1.affine, atol=1e-4)
            preds[engine][case] = np.asarray(pred.dataobj)
    assert_fp32_engines_agree(preds)
    assert any(m.any() for m in preds["openvino_int8"].values())  # INT8 finds tumours too
