"""NFBS skull-stripping bundle end to end on look-alike data: learns, evaluates, infers, resumes, refuses bad input,
exports the CPU engines and infers with each."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import (
    ROOT,
    agreement,
    assert_case_pictures,
    assert_engine_record,
    assert_strategy_record,
    assert_tensorboard_tags,
    assert_training_refuses,
    bundle_dir,
    change_checkpoint,
    engine_log,
    engine_used,
    read_json,
    run_engines,
    run_workflow,
    write_dicom_series,
    write_itk_copy,
)
from torch import nn

from common.datasets.nfbs import build_datalist as nfbs
from common.datasets.nfbs import write_lookalike as write_nfbs
from common.engines import ENGINES, load_engine
from common.errors import user_error_in

BUNDLE = "nfbs_brain_mri_segmentation"
TINY = {"patch_size": [32, 32, 32], "num_workers": 0, "init_filters": 16, "cache_rate": 1.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("nfbs")
    ds = write_nfbs(str(root / "data"), cases=8, seed=0, size=40)
    datalist = str(root / "nfbs.json")
    nfbs(ds, out=datalist)
    return {"dataset_dir": ds, "datalist": datalist}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """One short CPU training shared by the learning, evaluation and inference tests."""
    root = tmp_path_factory.mktemp("nfbs_bundle")
    wf = run_workflow(BUNDLE, ["train.json"], "train", root, **data, **TINY, epochs=12, val_interval=4,
                      learning_rate=3e-3, num_samples=4)
    best = wf.parser.get_parsed_content("validate#evaluator").state.best_metric
    return {"root": root, "best_val_dice": best}


def test_training_learns_brain_masks(trained):
    assert trained["best_val_dice"] >= 0.8
    models = trained["root"] / "models"
    assert (models / "model.pt").exists()
    assert (models / "last_checkpoint_epoch=12.pt").exists()


def test_evaluate_scores_every_strategy_and_records_the_best(data, trained):
    root = trained["root"]
    run_workflow(BUNDLE, ["train.json", "evaluate.json"], "train", root, **data, **TINY)
    summary = dict(line.strip().split(",") for line in open(root / "eval" / "metrics.csv"))
    assert float(summary["val_mean_dice"]) >= 0.8
    for metric in ("val_hd95", "val_asd", "val_mean_dice_largest_component", "val_mean_dice_morphological"):
        assert metric in summary
    per_case = (root / "eval" / "val_mean_dice_raw.csv").read_text().splitlines()
    assert per_case[0].startswith("filename") and len(per_case) == 1 + 2  # fold 0 holds 2 of the 8 cases
    stats = (root / "eval" / "val_hd95_summary.csv").read_text()
    assert "mean" in stats and "median" in stats and "std" in stats
    assert_strategy_record(root / "eval", root / "models" / "postprocessing.json")  # scores = metrics.csv
    assert_case_pictures(root / "eval")


def test_training_writes_tensorboard_events_with_the_named_tags(trained):
    assert_tensorboard_tags(trained["root"] / "eval", epochs=12, val_interval=4)


def test_inference_writes_masks_on_the_input_grid(data, trained, tmp_path):
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json"], "infer", trained["root"], dataset_dir=data["dataset_dir"],
                 output_dir=str(out), patch_size=[32, 32, 32], init_filters=16)
    preds = sorted(out.glob("*_seg.nii.gz"))
    assert len(preds) == 8
    dices = []
    for pred_file in preds:
        subject = pred_file.name.split("_")[0][4:]
        image = nib.load(os.path.join(data["dataset_dir"], subject, f"sub-{subject}_ses-NFB3_T1w.nii.gz"))
        mask = nib.load(os.path.join(data["dataset_dir"], subject, f"sub-{subject}_ses-NFB3_T1w_brainmask.nii.gz"))
        pred = nib.load(pred_file)
        assert pred.shape == image.shape
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-4)
        p, m = np.asarray(pred.dataobj) > 0, np.asarray(mask.dataobj) > 0
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}
        dices.append(2 * (p & m).sum() / (p.sum() + m.sum()))
    assert np.mean(dices) >= 0.8


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_nrrd_mha_and_dicom_series_get_the_masks_of_the_nifti(data, trained, tmp_path):
    """The same T1 as NIfTI, NRRD, MHA and a DICOM series folder: each mask lands on the input's grid and matches
    the NIfTI one (the DICOM series holds int16 values, so a few voxels may differ)."""
    subject = sorted(os.listdir(data["dataset_dir"]))[0]
    src = os.path.join(data["dataset_dir"], subject, f"sub-{subject}_ses-NFB3_T1w.nii.gz")
    inputs = tmp_path / "in"
    names = {}
    for fmt, suffix in (("nii", ".nii.gz"), ("nrrd", ".nrrd"), ("mha", ".mha"), ("dcm", "")):
        sid = f"{subject}{fmt}"
        target = inputs / sid / f"sub-{sid}_ses-NFB3_T1w{suffix}"
        target.parent.mkdir(parents=True)
        if fmt == "nii":
            shutil.copy(src, target)
        elif fmt == "dcm":
            write_dicom_series(src, target)
        else:
            write_itk_copy(src, target)
        names[fmt] = f"sub-{sid}_ses-NFB3_T1w_seg.nii.gz"
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json"], "infer", trained["root"], dataset_dir=str(inputs), output_dir=str(out),
                 engine="torch")
    image = nib.load(src)
    masks = {}
    for fmt, name in names.items():
        pred = nib.load(out / name)
        assert pred.shape == image.shape, fmt
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-3, err_msg=fmt)
        masks[fmt] = np.asarray(pred.dataobj) > 0
    assert masks["nii"].sum() > 0
    for fmt in ("nrrd", "mha"):
        np.testing.assert_array_equal(masks[fmt], masks["nii"], err_msg=fmt)
    assert _dice(masks["dcm"], masks["nii"]) >= 0.99


def _coarse_copy(dataset_dir: str, subject: str, out_dir, pixdim=(2.0, 2.0, 3.0)) -> dict[str, nib.Nifti1Image]:
    """The T1 and brain mask of ``subject`` resampled to ``pixdim``, written in the NFBS layout under ``out_dir``."""
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    folder = os.path.join(dataset_dir, subject)
    coarse = {}
    for kind, mode in (("T1w", "bilinear"), ("T1w_brainmask", "nearest")):
        img = nib.load(os.path.join(folder, f"sub-{subject}_ses-NFB3_{kind}.nii.gz"))
        volume = MetaTensor(np.asarray(img.dataobj, np.float32)[None], affine=img.affine)
        resampled = Spacing(pixdim=pixdim, mode=mode)(volume)
        coarse[kind] = nib.Nifti1Image(np.asarray(resampled[0]), np.asarray(resampled.affine))
        (out_dir / subject).mkdir(parents=True, exist_ok=True)
        nib.save(coarse[kind], out_dir / subject / f"sub-{subject}_ses-NFB3_{kind}.nii.gz")
    return coarse


def test_an_anisotropic_volume_is_predicted_at_1mm_and_written_on_its_own_grid(data, trained, tmp_path):
    """A 2 x 2 x 3 mm copy of a case: the network sees it at the training spacing (1 mm), the mask comes back on the
    coarse grid."""
    subject = sorted(os.listdir(data["dataset_dir"]))[1]
    inputs = tmp_path / "in"
    coarse = _coarse_copy(data["dataset_dir"], subject, inputs)
    os.remove(inputs / subject / f"sub-{subject}_ses-NFB3_T1w_brainmask.nii.gz")
    out = tmp_path / "pred"
    wf = run_workflow(BUNDLE, ["inference.json"], "infer", trained["root"], dataset_dir=str(inputs),
                      output_dir=str(out), engine="torch")
    image = str(inputs / subject / f"sub-{subject}_ses-NFB3_T1w.nii.gz")
    seen = wf.parser.get_parsed_content("preprocessing")({"image": image})
    np.testing.assert_allclose(seen["image"].pixdim, [1.0, 1.0, 1.0], atol=1e-4)
    pred = nib.load(out / f"sub-{subject}_ses-NFB3_T1w_seg.nii.gz")
    assert pred.shape == coarse["T1w"].shape
    np.testing.assert_allclose(pred.affine, coarse["T1w"].affine, atol=1e-4)
    assert _dice(np.asarray(pred.dataobj) > 0, np.asarray(coarse["T1w_brainmask"].dataobj) > 0) >= 0.75


def _one_hot(mask: np.ndarray, affine: np.ndarray):
    from monai.data import MetaTensor

    t = torch.as_tensor(mask, dtype=torch.float32)
    return MetaTensor(torch.stack([1 - t, t])[None], affine=torch.as_tensor(affine, dtype=torch.float64))


def test_evaluation_scores_the_written_masks_on_the_label_grid_in_mm(data, trained, tmp_path):
    """Cases at 2 x 2 x 3 mm, the model working at 1 mm: evaluate.json's per-case Dice and HD95 are those of the
    masks inference.json writes, measured against the label files on their own grid, distances in mm of it."""
    import json

    from common.metrics import HausdorffDistanceMetric

    *subjects, other = sorted(os.listdir(data["dataset_dir"]))[:3]
    inputs = tmp_path / "in"
    labels = {s: _coarse_copy(data["dataset_dir"], s, inputs)["T1w_brainmask"] for s in [*subjects, other]}
    datalist = tmp_path / "coarse.json"
    datalist.write_text(json.dumps({"num_folds": 5, "training": [  # fold 0 is scored, the other case trains
        {"image": f"{s}/sub-{s}_ses-NFB3_T1w.nii.gz", "label": f"{s}/sub-{s}_ses-NFB3_T1w_brainmask.nii.gz",
         "fold": int(s == other)} for s in [*subjects, other]]}))
    shutil.copytree(trained["root"] / "models", tmp_path / "run" / "models")
    run_workflow(BUNDLE, ["train.json", "evaluate.json"], "train", tmp_path / "run", dataset_dir=str(inputs),
                 datalist=str(datalist), engine="torch", num_workers=0)
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json"], "infer", tmp_path / "run", dataset_dir=str(inputs), output_dir=str(out),
                 engine="torch", postprocessing_strategy="none")

    def per_case(name: str) -> dict[str, float]:
        rows = [r.split(",") for r in (tmp_path / "run" / "eval" / f"{name}_raw.csv").read_text().splitlines()[1:]]
        return {os.path.basename(r[0]).split("_")[0][4:]: float(r[1]) for r in rows}

    dice, hd95 = per_case("val_mean_dice"), per_case("val_hd95")
    assert sorted(dice) == subjects
    for s in subjects:
        pred = nib.load(out / f"sub-{s}_ses-NFB3_T1w_seg.nii.gz")
        assert pred.shape == labels[s].shape
        p, m = np.asarray(pred.dataobj) > 0, np.asarray(labels[s].dataobj) > 0
        assert dice[s] == pytest.approx(_dice(p, m), abs=1e-4), s
        y_pred, y = (_one_hot(x, labels[s].affine) for x in (p, m))
        expected = float(HausdorffDistanceMetric(percentile=95)(y_pred, y))
        assert hd95[s] == pytest.approx(expected, rel=1e-4), s
        in_voxels = float(HausdorffDistanceMetric(percentile=95)(y_pred.as_tensor(), y.as_tensor()))
        assert expected != pytest.approx(in_voxels, rel=1e-3)  # mm of the 2 x 2 x 3 grid, not voxels


def test_the_model_is_used_as_trained_without_repeating_the_overrides(data, trained, tmp_path):
    """Training saved its settings beside model.pt; inference with no override uses them, and evaluation too;
    an override that contradicts them stops with one sentence before anything runs."""
    models = trained["root"] / "models"
    saved = read_json(models / "training_params.json")
    assert saved == {"arch": "unet", "pocket": True, "init_filters": 16, "patch_size": [32, 32, 32], "depth": 3,
                     "head_stages": None, "double_until": None, "style": "tmi", "scale": 2, "num_classes": 2,
                     "in_channels": 1, "spacing": [1.0, 1.0, 1.0]}
    plain = run_workflow(BUNDLE, ["inference.json"], "infer", trained["root"], dataset_dir=data["dataset_dir"],
                         output_dir=str(tmp_path / "plain"))  # no --init_filters / --patch_size
    assert plain.parser.get_parsed_content("init_filters") == 16
    assert list(plain.parser.get_parsed_content("inferer").sliding.roi_size) == [32, 32, 32]
    assert len(list((tmp_path / "plain").glob("*_seg.nii.gz"))) == 8
    evaluation = run_workflow(BUNDLE, ["train.json", "evaluate.json"], "train", trained["root"], **data,
                              num_workers=0, output_dir=str(tmp_path / "eval"))
    assert evaluation.parser.get_parsed_content("depth") == 3
    with pytest.raises(Exception) as info:
        run_workflow(BUNDLE, ["inference.json"], "infer", trained["root"], dataset_dir=data["dataset_dir"],
                     output_dir=str(tmp_path / "wrong"), init_filters=32)
    err = user_error_in(info.value)
    assert str(err) == (f"{models / 'model.pt'} was trained with init_filters 16, this run asks 32 (drop the "
                        "override, or train again with it).")
    assert not (tmp_path / "wrong").exists()


def test_a_checkpoint_that_does_not_fit_the_network_is_one_sentence(data, trained, tmp_path):
    """Without the saved settings (a model from elsewhere), a wrong width reaches the user as one sentence."""
    root = tmp_path / "bundle"
    shutil.copytree(trained["root"] / "models", root / "models")
    (root / "models" / "training_params.json").unlink()
    with pytest.raises(Exception) as info:
        run_workflow(BUNDLE, ["inference.json"], "infer", root, dataset_dir=data["dataset_dir"],
                     output_dir=str(tmp_path / "out"), patch_size=[32, 32, 32], init_filters=32, engine="torch")
    sentence = str(user_error_in(info.value))
    assert sentence.startswith(f"{root / 'models' / 'model.pt'}: the checkpoint does not fit this config's network (")
    assert "size mismatch" not in sentence and "torch.Size([16" in sentence, sentence
    assert sentence.endswith("were arch, pocket, widths and depth the same as in training?"), sentence


def test_interrupted_training_resumes_where_it_stopped(data, tmp_path):
    run_workflow(BUNDLE, ["train.json"], "train", tmp_path, **data, **TINY, epochs=1, val_interval=1)
    wf = run_workflow(BUNDLE, ["train.json"], "train", tmp_path, **data, **TINY, epochs=2, val_interval=1)
    trainer = wf.parser.get_parsed_content("train#trainer")
    per_epoch = len(wf.parser.get_parsed_content("train#dataloader"))
    assert trainer.state.epoch == 2
    assert trainer.state.iteration == 2 * per_epoch  # epoch 1 was restored, only epoch 2 ran
    assert (tmp_path / "models" / "last_checkpoint_epoch=2.pt").exists()


def _break(case_dir: str, subject: str, how: str) -> str:
    image = os.path.join(case_dir, f"sub-{subject}_ses-NFB3_T1w.nii.gz")
    label = os.path.join(case_dir, f"sub-{subject}_ses-NFB3_T1w_brainmask.nii.gz")
    img = nib.load(image)
    if how == "missing":
        os.remove(label)
        return label
    if how == "unreadable":
        with open(label, "wb") as f:
            f.write(b"not a nifti file")
        return label
    if how == "channels":
        data = np.stack([np.asarray(img.dataobj)] * 2, axis=-1)
        nib.save(nib.Nifti1Image(data, img.affine), image)
        return image
    if how == "grid":
        lab = nib.load(label)
        nib.save(nib.Nifti1Image(np.asarray(lab.dataobj)[:-3], lab.affine), label)
        return label
    if how == "values":
        lab = nib.load(label)
        arr = np.asarray(lab.dataobj).copy()
        arr[arr > 0] = 3
        nib.save(nib.Nifti1Image(arr, lab.affine), label)
        return label
    if how == "truncated":  # a download cut short: only decompressing to the end finds it
        raw = open(image, "rb").read()
        with open(image, "wb") as f:
            f.write(raw[: len(raw) // 2])
        return image
    if how == "flat":  # one slice given to a 3D bundle
        for path in (image, label):
            nib.save(nib.Nifti1Image(np.asarray(nib.load(path).dataobj)[:, :, 20:21], img.affine), path)
        return image
    if how == "nan":
        data = np.asarray(img.dataobj).astype(np.float32)
        data[10, 10, 10:12] = np.nan
        nib.save(nib.Nifti1Image(data, img.affine), image)
        return image
    raise ValueError(how)


@pytest.mark.parametrize(
    "how,words",
    [("missing", "does not exist"), ("unreadable", "cannot be read"), ("channels", "2 channels, expected 1"),
     ("grid", "does not match its image"), ("values", "unexpected label values [3]"),
     ("truncated", "cannot be read as an image"), ("flat", "image is 2D (shape ("),
     ("nan", "image has 2 NaN or infinite voxels")],
)
def test_bad_input_is_refused_before_training(data, tmp_path, how, words):
    ds = tmp_path / "NFBS_Dataset"
    shutil.copytree(data["dataset_dir"], ds)
    entries = read_json(data["datalist"])["training"]
    victim = next(e for e in entries if e["fold"] != 0)  # a training case
    subject = os.path.dirname(victim["image"])
    bad_file = _break(str(ds / subject), subject, how)
    assert_training_refuses(BUNDLE, tmp_path / "bundle", bad_file, words,
                            dataset_dir=str(ds), datalist=data["datalist"], **TINY)


def test_multi_gpu_config_trains_with_two_processes_on_cpu(data, tmp_path):
    """torchrun, 2 processes, gloo backend on CPU: one epoch trains and rank 0 saves the checkpoints."""
    configs = str(bundle_dir(BUNDLE) / "configs")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "training",
        "--config_file", f"['{configs}/train.json','{configs}/multi_gpu_train.json']",
        "--meta_file", f"{configs}/metadata.json", "--logging_file", f"{configs}/logging.conf",
        "--bundle_root", str(tmp_path), "--dataset_dir", data["dataset_dir"], "--datalist", data["datalist"],
        "--patch_size", "[32,32,32]", "--num_workers", "0", "--init_filters", "8", "--epochs", "1",
        "--val_interval", "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the validation ran under torchrun too: its Dice is in the epoch's log line
    assert re.search(r"Epoch\[1\] Metrics -- .*val_mean_dice: \d", proc.stdout + proc.stderr), proc.stderr[-3000:]
    assert "backend" not in proc.stderr or "nccl" not in proc.stderr
    assert (tmp_path / "models" / "model.pt").exists()
    assert (tmp_path / "models" / "last_checkpoint_epoch=1.pt").exists()


# ------------------------------------------------------------------------------------------------- engines
INFER = {"patch_size": TINY["patch_size"], "init_filters": TINY["init_filters"]}


@pytest.fixture(scope="module")
def exported(data, trained, tmp_path_factory):
    """pocket engines on a copy of the trained model (the trained root keeps inferring with torch)."""
    return run_engines(BUNDLE, data, trained["root"], tmp_path_factory.mktemp("nfbs_engines"), **TINY)


def _infer(root, dataset_dir, out, engine):
    wf = run_workflow(BUNDLE, ["inference.json"], "infer", root, dataset_dir=str(dataset_dir), output_dir=str(out),
                      engine=engine, **INFER)
    return wf, {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob("*_seg.nii.gz"))}


@pytest.fixture(scope="module")
def engine_predictions(data, exported, tmp_path_factory):
    """Inference over the 8 look-alike cases with each engine: label maps by engine and file name."""
    out, preds = tmp_path_factory.mktemp("nfbs_engine_pred"), {}
    for engine in ENGINES:
        wf, preds[engine] = _infer(exported["root"], data["dataset_dir"], out / engine, engine)
        assert engine_used(wf) == engine  # the export ran, not the torch fallback
    return {"dir": out, "preds": preds}


def test_engines_command_records_the_fastest_good_engine(exported):
    record = assert_engine_record(exported)
    assert record["metric"] == "val_mean_dice" and record["cases_scored"] == 2  # fold 0's validation cases
    assert record["scores"]["torch"]["metric"] >= 0.8
    assert record["multiple"] == [8, 8, 8] and set(record["bytes_per_voxel"]) == set(ENGINES)
    auto = load_engine(nn.Identity(), exported["root"] / "models", "auto", 1)
    assert getattr(auto, "engine", "torch") == record["chosen"]  # inference's engine "auto" reads the record


def test_inference_with_each_engine_writes_masks_on_the_input_grid_and_agrees_with_torch(data, engine_predictions):
    preds = engine_predictions["preds"]
    names = sorted(preds["torch"])
    assert len(names) == 8
    dice = {}
    for engine in ENGINES:
        assert sorted(preds[engine]) == names, engine  # one mask per input image
        dice[engine] = []
        for name in names:
            subject = name.split("_")[0][4:]
            image = nib.load(os.path.join(data["dataset_dir"], subject, f"sub-{subject}_ses-NFB3_T1w.nii.gz"))
            pred = nib.load(engine_predictions["dir"] / engine / name)
            assert pred.shape == image.shape, (engine, name)
            np.testing.assert_allclose(pred.affine, image.affine, atol=1e-4)
            mask = nib.load(os.path.join(data["dataset_dir"], subject,
                                         f"sub-{subject}_ses-NFB3_T1w_brainmask.nii.gz"))
            p, m = preds[engine][name] > 0, np.asarray(mask.dataobj) > 0
            dice[engine].append(2 * (p & m).sum() / (p.sum() + m.sum()))
    for engine in ("onnxruntime", "openvino"):
        for name in names:
            assert agreement(preds[engine][name], preds["torch"][name]) >= 0.999, (engine, name)
    assert np.mean(dice["torch"]) >= 0.8, dice
    for fp32 in ("onnxruntime", "openvino"):  # INT8 loses at most 0.01 Dice to fp32 (on this briefly trained
        assert np.mean(dice["openvino_int8"]) >= np.mean(dice[fp32]) - 0.01, dice  # model it can also gain)


def test_export_older_than_the_checkpoint_is_not_used(data, exported, tmp_path, caplog):
    """A retrained model.pt: inference with engine openvino says the export is older and runs with torch."""
    root, inputs = tmp_path / "bundle", tmp_path / "in"
    shutil.copytree(exported["root"] / "models", root / "models")
    for subject in sorted(os.listdir(data["dataset_dir"]))[:2]:
        shutil.copytree(os.path.join(data["dataset_dir"], subject), inputs / subject)
    change_checkpoint(root / "models" / "model.pt")
    with engine_log(caplog) as records:
        wf, stale = _infer(root, inputs, tmp_path / "openvino", "openvino")
    assert engine_used(wf) == "torch"
    [line] = [r.getMessage() for r in records if "not used" in r.getMessage()]
    assert line.startswith("engine openvino not used: ") and "older" in line, line
    assert line.endswith("the network runs with torch."), line
    _, torch_run = _infer(root, inputs, tmp_path / "torch", "torch")
    assert len(stale) == 2 and sorted(stale) == sorted(torch_run)
    for name in stale:
        np.testing.assert_array_equal(stale[name], torch_run[name])


@pytest.mark.slow
def test_the_short_paper_preset_learns_on_5_slice_slabs(data, tmp_path):
    """train_short.json (Celaya et al., the MICCAI-workshop PocketNet): 16 features, depth 4, no normalisation,
    in-plane down-sampling of 5-slice slabs; evaluation and inference slide the slab one slice at a time."""
    from monai.inferers import SlidingWindowInferer

    root = tmp_path / "short"
    slab = {"patch_size": [48, 48, 5], "num_workers": 0, "cache_rate": 1.0}
    wf = run_workflow(BUNDLE, ["train.json", "train_short.json"], "train", root, **data, **slab, epochs=15,
                      val_interval=5, learning_rate=1e-3, num_samples=8)
    net = wf.parser.get_parsed_content("network_def")
    assert not [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._NormBase | nn.GroupNorm)]
    assert net(torch.zeros(1, 1, 48, 48, 5)).shape == (1, 2, 48, 48, 5)  # the slab axis is never down-sampled
    assert wf.parser.get_parsed_content("validate#evaluator").state.best_metric >= 0.8
    saved = read_json(root / "models" / "training_params.json")
    assert saved["style"] == "short" and saved["scale"] == [2, 2, 1] and saved["depth"] == 4
    # evaluation: the same overlay, the settings read back from training_params.json
    ev = run_workflow(BUNDLE, ["train.json", "train_short.json", "evaluate.json"], "train", root, **data,
                      num_workers=0)
    inferer = ev.parser.get_parsed_content("validate#inferer")
    assert isinstance(inferer, SlidingWindowInferer) and list(inferer.roi_size) == [48, 48, 5]
    summary = dict(line.strip().split(",") for line in open(root / "eval" / "metrics.csv"))
    assert float(summary["val_mean_dice"]) >= 0.8
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json", "inference_short.json"], "infer", root, dataset_dir=data["dataset_dir"],
                 output_dir=str(out), engine="torch")
    subject = sorted(os.listdir(data["dataset_dir"]))[0]
    mask = nib.load(out / f"sub-{subject}_ses-NFB3_T1w_seg.nii.gz")
    label = nib.load(os.path.join(data["dataset_dir"], subject, f"sub-{subject}_ses-NFB3_T1w_brainmask.nii.gz"))
    assert mask.shape == label.shape and _dice(np.asarray(mask.dataobj) > 0, np.asarray(label.dataobj) > 0) >= 0.8
