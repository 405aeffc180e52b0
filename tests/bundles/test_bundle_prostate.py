"""MSD prostate bundle (low-resolution input, high-resolution output) end to end on look-alike data: learns,
evaluates at the original resolution, infers 3D masks on the input grid, builds every input size with the head
on and off, ignores macOS junk, refuses bad labels, runs the paper-claim experiment in a tiny mode and the CPU
engines."""

from __future__ import annotations

import json
import os
import re
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
    SCHEMA,
    assert_case_pictures,
    assert_engine_record,
    assert_fp32_engines_agree,
    assert_tensorboard_tags,
    assert_training_refuses,
    bundle_dir,
    engine_used,
    read_json,
    read_per_case,
    run_engines,
    run_workflow,
    write_itk_copy,
)
from monai.bundle import ConfigParser, ckpt_export, verify_metadata

from common.datasets.prostate import build_datalist as msd
from common.datasets.prostate import write_lookalike as write_prostate
from common.engines import ENGINES
from common.experiments import lowres as lowres_experiment
from common.losses.multiscale import MultiScaleLoss

BUNDLE = "prostate_mri_segmentation"
# look-alike slices are ~64x64: a 32x32 input with the head (one x2 stage) to a 64x64 ground truth
TINY = {"image_size": 64, "input_size": 32, "features": 8, "num_workers": 0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _junk(path: str) -> None:
    """A macOS AppleDouble file, as found next to every image of the real MSD tarball."""
    with open(path, "wb") as f:
        f.write(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(100))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("prostate")
    ds = write_prostate(str(root / "data"), cases=10, seed=0, size=64)  # also writes imagesTr/._prostate_00
    _junk(os.path.join(ds, "imagesTs", "._prostate_01.nii.gz"))
    # the real dataset.json of some MSD tasks lists junk entries too
    meta = read_json(os.path.join(ds, "dataset.json"))
    meta["training"].append({"image": "./imagesTr/._prostate_00.nii.gz", "label": "./labelsTr/._prostate_00.nii.gz"})
    with open(os.path.join(ds, "dataset.json"), "w") as f:
        json.dump(meta, f)
    datalist = str(root / "msd_prostate.json")
    msd(ds, out=datalist)
    return {"dataset_dir": ds, "datalist": datalist}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """One short CPU training shared by the learning, evaluation and inference tests."""
    root = tmp_path_factory.mktemp("prostate_bundle")
    wf = run_workflow(BUNDLE, ["train.json"], "train", root, **data, **TINY, epochs=30, val_interval=5,
                      learning_rate=5e-3)
    best = wf.parser.get_parsed_content("validate#evaluator").state.best_metric
    return {"root": root, "best_val_dice": best}


def test_training_learns_prostate_at_original_resolution(trained):
    assert trained["best_val_dice"] >= 0.8
    models = trained["root"] / "models"
    assert (models / "model.pt").exists()
    assert (models / "last_checkpoint_epoch=30.pt").exists()


def test_training_writes_tensorboard_events_with_the_named_tags(trained):
    assert_tensorboard_tags(trained["root"] / "eval", epochs=30, val_interval=5)  # 2D slices


def test_evaluate_writes_dice_and_jaccard_per_case(data, trained):
    root = trained["root"]
    run_workflow(BUNDLE, ["train.json", "evaluate.json"], "train", root, **data, **TINY)
    summary = dict(line.strip().split(",") for line in open(root / "eval" / "metrics.csv"))
    assert float(summary["val_mean_dice"]) >= 0.8
    assert 0.5 <= float(summary["val_mean_iou"]) < float(summary["val_mean_dice"])
    n_val = sum(e["fold"] == 0 for e in read_json(data["datalist"])["training"])
    for metric in ("val_mean_dice", "val_mean_iou"):
        rows = (root / "eval" / f"{metric}_raw.csv").read_text().splitlines()
        assert rows[0].startswith("filename") and len(rows) == 1 + n_val
        assert all("prostate_" in r for r in rows[1:])
        stats = (root / "eval" / f"{metric}_summary.csv").read_text()
        assert "mean" in stats and "std" in stats
    assert_case_pictures(root / "eval")  # 2D slices of the volumes


def test_inference_writes_3d_masks_on_the_input_grid_and_skips_junk(data, trained, tmp_path):
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json"], "infer", trained["root"], dataset_dir=data["dataset_dir"],
                 output_dir=str(out), image_size=64, input_size=32, features=8)
    images = sorted(f for f in os.listdir(os.path.join(data["dataset_dir"], "imagesTs")) if not f.startswith("._"))
    preds = sorted(p.name for p in out.glob("*_seg.nii.gz"))
    assert preds == [f.replace(".nii.gz", "_seg.nii.gz") for f in images]  # no output for ._prostate_01
    for name in images:
        image = nib.load(os.path.join(data["dataset_dir"], "imagesTs", name))
        pred = nib.load(out / name.replace(".nii.gz", "_seg.nii.gz"))
        assert image.ndim == 4 and pred.ndim == 3
        assert pred.shape == image.shape[:3]
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-4)
        values = np.asarray(pred.dataobj)
        assert set(np.unique(values)) <= {0, 1} and values.sum() > 0


def test_nrrd_and_mha_cases_get_the_mask_of_the_nifti(data, trained, tmp_path):
    """A two-channel case (T2 + ADC) as NRRD and MHA, written by ITK as vector images: each mask is the NIfTI one's,
    on the input's grid."""
    images = Path(data["dataset_dir"]) / "imagesTs"
    src = sorted(p for p in images.glob("*.nii.gz") if not p.name.startswith("._"))[0]
    inputs = tmp_path / "in" / "imagesTs"
    inputs.mkdir(parents=True)
    shutil.copy(src, inputs / "prostate_90.nii.gz")
    write_itk_copy(src, inputs / "prostate_91.nrrd")
    write_itk_copy(src, inputs / "prostate_92.mha")
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json"], "infer", trained["root"], dataset_dir=str(inputs.parent),
                 output_dir=str(out), image_size=64, input_size=32, features=8)
    image = nib.load(src)
    masks = {}
    for n in (90, 91, 92):
        pred = nib.load(out / f"prostate_{n}_seg.nii.gz")
        assert pred.shape == image.shape[:3], n
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-3, err_msg=str(n))
        masks[n] = np.asarray(pred.dataobj)
    assert masks[90].any()
    for n in (91, 92):
        np.testing.assert_array_equal(masks[n], masks[90], err_msg=str(n))


def _parser(**override) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(bundle_dir(BUNDLE) / "configs" / "train.json"))
    parser.update({"bundle_root": str(bundle_dir(BUNDLE)), **override})
    return parser


@pytest.mark.parametrize("input_size", [16, 32])
@pytest.mark.parametrize("head", [True, False])
def test_head_on_and_off_build_with_the_expected_shapes(input_size, head):
    parser = _parser(input_size=input_size, head=head, features=4)
    stages = parser.get_parsed_content("head_stages")
    assert parser.get_parsed_content("gt_size") == 256  # the paper's ground truth for 16 and 32 inputs
    assert stages == ({16: 4, 32: 3}[input_size] if head else 0)
    assert parser.get_parsed_content("label_size") == (256 if head else input_size)
    assert isinstance(parser.get_parsed_content("loss"), MultiScaleLoss) == head
    net = parser.get_parsed_content("network_def")
    x = torch.randn(2, 1, input_size, input_size)
    net.train()
    out = net(x)
    if head:
        assert [o.shape[-1] for o in out] == [input_size * 2**i for i in range(stages + 1)]
        assert out[-1].shape == (2, 2, 256, 256)
    else:
        assert out.shape == (2, 2, input_size, input_size)
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 2, *(2 * [256 if head else input_size]))
        volume = torch.randn(1, 1, 67, 59, 5)  # scored and saved on the original slice grid
        probs = parser.get_parsed_content("validate#inferer")(volume, net)
    assert probs.shape == (1, 2, 67, 59, 5)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 67, 59, 5))


def test_head_network_exports_to_torchscript(tmp_path):
    d = bundle_dir(BUNDLE) / "configs"
    verify_metadata(meta_file=str(d / "metadata.json"), filepath=str(SCHEMA))
    override = {"input_size": 16, "features": 4, "bundle_root": str(bundle_dir(BUNDLE))}
    parser = ConfigParser()
    parser.read_config(str(d / "inference.json"))
    parser.update(override)
    net = parser.get_parsed_content("network_def")
    torch.save(net.state_dict(), tmp_path / "model.pt")
    ckpt_export(net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(tmp_path / "model.pt"),
                meta_file=str(d / "metadata.json"), config_file=str(d / "inference.json"), **override)
    x = torch.randn(1, 1, 16, 16)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "model.ts"))(x), net(x))
    assert net(x).shape == (1, 2, 256, 256)


def test_msd_junk_files_are_not_cases(data):
    entries = read_json(data["datalist"])["training"]
    assert len(entries) == 10
    assert not any(os.path.basename(e["image"]).startswith("._") for e in entries)
    assert os.path.exists(os.path.join(data["dataset_dir"], "imagesTr", "._prostate_00.nii.gz"))


def test_label_value_3_is_refused_before_training(data, tmp_path):
    ds = tmp_path / "Task05_Prostate"
    shutil.copytree(data["dataset_dir"], ds)
    victim = next(e for e in read_json(data["datalist"])["training"] if e["fold"] != 0)  # a training case
    bad_file = os.path.normpath(os.path.join(str(ds), victim["label"]))
    lab = nib.load(bad_file)
    arr = np.asarray(lab.dataobj).copy()
    arr[arr == 2] = 3
    nib.save(nib.Nifti1Image(arr, lab.affine), bad_file)
    assert_training_refuses(BUNDLE, tmp_path / "bundle", bad_file, "unexpected label values [3]",
                            dataset_dir=str(ds), datalist=data["datalist"], **TINY)


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def test_experiment_command_runs_in_tiny_mode(tmp_path, monkeypatch):
    """The tiny budget with 8 epochs of 4 volumes, one at a time: Dice 0.48-0.56 per run (0.22-0.79 over data
    seeds 1-2); the published table and results.json are exactly the per-case CSVs of each run's evaluation."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the configs' "auto" threads keep threads=1: repeatable rounding
    table = lowres_experiment.run(str(tmp_path), tiny=True, threads=1, epochs=8, batch_size=1, num_samples=4)
    assert (tmp_path / "results.md").read_text().strip() == table
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert sorted((r["input"], r["variant"]) for r in results) == [(16, "head"), (16, "plain"), (32, "head"),
                                                                     (32, "plain")]
    rows = table.splitlines()
    dice = {}
    for r in results:
        eval_dir = tmp_path / "runs" / "fold0" / f"{r['input']}_{r['variant']}" / "eval"
        per_case = {m: list(read_per_case(eval_dir, m).values()) for m in ("val_mean_dice", "val_mean_iou")}
        assert r["dice"] == pytest.approx(per_case["val_mean_dice"], abs=1e-6)
        assert r["iou"] == pytest.approx(per_case["val_mean_iou"], abs=1e-6)
        dice[r["input"], r["variant"]] = per_case["val_mean_dice"]
        name = "ELU-Net + head + multi-scale loss" if r["variant"] == "head" else "ELU-Net, upsampled"
        [row] = [x for x in rows if x.startswith(f"| {r['input']}x{r['input']} | {name} |")]
        cells = (_mean_std(per_case["val_mean_dice"]), _mean_std(per_case["val_mean_iou"]), str(len(r["dice"])))
        assert f"| {' | '.join(cells)} |" in row, row
    for size in (16, 32):
        assert f"| {size}x{size} | ELU-Net, upsampled | {size}x{size} | 0 |" in table
        diffs = [h - p for h, p in zip(dice[size, "head"], dice[size, "plain"])]
        assert (f"{size}x{size}: Dice(head) - Dice(plain) = {_mean_std(diffs)} over {len(diffs)} paired cases; "
                f"head better on {sum(d > 0 for d in diffs)} of {len(diffs)}.") in table
    scores = [d for r in results for d in r["dice"]]
    assert min(scores) >= 0.15 and np.mean(scores) >= 0.35, scores  # every run finds the prostate


def test_multi_gpu_config_trains_with_two_processes_on_cpu(data, tmp_path):
    """torchrun, 2 processes, gloo backend on CPU: one epoch trains and rank 0 saves the checkpoints."""
    configs = str(bundle_dir(BUNDLE) / "configs")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "training",
        "--config_file", f"['{configs}/train.json','{configs}/multi_gpu_train.json']",
        "--meta_file", f"{configs}/metadata.json", "--logging_file", f"{configs}/logging.conf",
        "--bundle_root", str(tmp_path), "--dataset_dir", data["dataset_dir"], "--datalist", data["datalist"],
        "--image_size", "64", "--input_size", "16", "--features", "4", "--num_workers", "0", "--epochs", "1",
        "--val_interval", "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the validation ran under torchrun too: its Dice is in the epoch's log line
    assert re.search(r"Epoch\[1\] Metrics -- .*val_mean_dice: \d", proc.stdout + proc.stderr), proc.stderr[-3000:]
    assert (tmp_path / "models" / "model.pt").exists()
    assert (tmp_path / "models" / "last_checkpoint_epoch=1.pt").exists()


def test_experiment_threads_reach_the_bundle(tmp_path, monkeypatch):
    """``--threads N`` holds for the trainings too: the bundle's ``cpu_threads`` ("auto") would pick its own."""
    seen = {}

    class Stop(Exception):
        pass

    def first_workflow(bundle_dir, configs, workflow_type, verbose, **override):
        seen.update(override)
        raise Stop

    monkeypatch.setattr(lowres_experiment, "run_workflow", first_workflow)
    with pytest.raises(Stop):
        lowres_experiment.run(str(tmp_path), tiny=True, threads=1)
    assert seen["cpu_threads"] == 1


# ------------------------------------------------------------------------------------------------- engines
@pytest.fixture(scope="module")
def exported(data, trained, tmp_path_factory):
    """pocket engines on a copy of the trained model (the trained root keeps inferring with torch)."""
    return run_engines(BUNDLE, data, trained["root"], tmp_path_factory.mktemp("prostate_engines"), **TINY)


def test_engines_command_records_the_fastest_good_engine(data, exported):
    record = assert_engine_record(exported)
    fold0 = sum(e["fold"] == 0 for e in read_json(data["datalist"])["training"])
    assert record["metric"] == "val_mean_dice" and record["cases_scored"] == fold0
    assert record["input_shape"] == [1, 1, 32, 32]  # the low-resolution slices the network sees
    assert record["scores"]["torch"]["metric"] >= 0.8


def test_inference_with_each_engine_writes_3d_masks_on_the_input_grid_and_agrees_with_torch(data, exported,
                                                                                            tmp_path):
    images = sorted(f for f in os.listdir(os.path.join(data["dataset_dir"], "imagesTs")) if not f.startswith("._"))
    preds = {}
    for engine in ENGINES:
        out = tmp_path / engine
        wf = run_workflow(BUNDLE, ["inference.json"], "infer", exported["root"], dataset_dir=data["dataset_dir"],
                          output_dir=str(out), image_size=64, input_size=32, features=8, engine=engine)
        assert engine_used(wf) == engine  # the export ran, not the torch fallback
        names = sorted(p.name for p in out.glob("*_seg.nii.gz"))
        assert names == [f.replace(".nii.gz", "_seg.nii.gz") for f in images], engine  # one mask per image
        preds[engine] = {}
        for name in images:
            image = nib.load(os.path.join(data["dataset_dir"], "imagesTs", name))
            pred = nib.load(out / name.replace(".nii.gz", "_seg.nii.gz"))
            assert pred.shape == image.shape[:3], (engine, name)
            np.testing.assert_allclose(pred.affine, image.affine, atol=1e-4)
            preds[engine][name] = np.asarray(pred.dataobj)
    assert_fp32_engines_agree(preds)
    assert all(m.any() for m in preds["openvino_int8"].values())  # INT8 finds every prostate
