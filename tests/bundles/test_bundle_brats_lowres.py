"""BraTS as 2D low-resolution slices (Ostrowski & Shafique, Table III) through train_lowres_2d.json: the overlay
resolves to the paper's sizes, trains and learns the three classes at input 64 with the head, evaluates per class
(pooled and per volume), infers a BraTS label map on the t1 grid, and the experiment command runs end to end."""

from __future__ import annotations

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import SCHEMA, bundle_dir, read_json, run_workflow
from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out

from common.datasets.brats import lookalike_datalist
from common.datasets.brats import write_lookalike as write_brats
from common.experiments import lowres as lowres_experiment
from common.losses.multiscale import MultiScaleLoss

BUNDLE = "brats_tumor_mri_segmentation"
TRAIN = ["train.json", "train_lowres_2d.json"]
# fold 0 of the committed list holds cases 4 and 7 (validation); the look-alike brains are ~100 voxels a side,
# padded to 128x128 slices: input 64 with the head (one x2 stage) to the 128x128 ground truth
IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
TINY = {"slice_size": 128, "input_size": 64, "init_filters": 16, "num_workers": 0}
CLASSES = {1: "NCR/NET (1)", 2: "ED (2)", 4: "ET (4)"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("brats_lowres")
    ds = write_brats(str(root / "data"), seed=0, size=100, ids=IDS)
    return {"dataset_dir": ds, "datalist": lookalike_datalist(ds, str(root / "brats2020_lookalike.json"))}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """144 steps of 16 slices (105 s on one thread here). Measured at 28 epochs, seed 0: validation Dice per class
    NCR/NET 0.67-0.80, ED 0.97-0.98, ET 0.95-0.97; the small necrotic core is learned last (below 0.1 at epoch
    20), so fewer epochs fail the NCR/NET floor rather than the mean."""
    root = tmp_path_factory.mktemp("brats_lowres_bundle")
    wf = run_workflow(BUNDLE, TRAIN, "train", root, **data, **TINY, epochs=36, val_interval=6, learning_rate=3e-3)
    return {"root": root, "best_val_dice": wf.parser.get_parsed_content("validate#evaluator").state.best_metric}


def _parser(configs=TRAIN, **override) -> ConfigParser:
    d = bundle_dir(BUNDLE) / "configs"
    parser = ConfigParser()
    parser.read_config([str(d / c) for c in configs])
    parser.update({"bundle_root": str(bundle_dir(BUNDLE)), **override})
    return parser


@pytest.mark.parametrize("input_size,head,stages", [(16, True, 4), (64, True, 2), (64, False, None),
                                                    (256, True, 0)])
def test_overlay_resolves_to_the_papers_sizes(input_size, head, stages):
    parser = _parser(input_size=input_size, head=head, init_filters=4)
    assert parser.get_parsed_content("gt_size") == 256
    assert parser.get_parsed_content("head_stages") == stages
    assert parser.get_parsed_content("label_size") == (256 if head else input_size)
    assert isinstance(parser.get_parsed_content("loss"), MultiScaleLoss) == head
    assert parser.get_parsed_content("patch_size") == [256, 256, 1]
    assert parser.get_parsed_content("ckpt_dir").endswith("models/lowres_2d")
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        assert net(torch.randn(1, 4, input_size, input_size)).shape == (1, 4, *(2 * [256 if head else input_size]))
        probs = parser.get_parsed_content("validate#inferer")(torch.randn(1, 4, 256, 256, 3), net)
    assert probs.shape == (1, 4, 256, 256, 3)  # scored on the 256x256 slice grid
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 256, 256, 3))


def test_training_samples_whole_slices_at_the_two_resolutions(data):
    parser = _parser(**data, **TINY, cache_rate=0.0, num_samples=3)
    item = parser.get_parsed_content("train#dataset")[0]
    assert len(item) == 3
    for sample in item:
        assert sample["image"].shape == (4, 64, 64)
        assert sample["label"].shape == (1, 128, 128)  # the head's output size
        assert set(torch.unique(sample["label"]).tolist()) <= {0, 1, 2, 3}  # BraTS 4 -> class 3


def test_training_learns_the_three_classes_at_input_64(trained):
    assert trained["best_val_dice"] >= 0.7
    models = trained["root"] / "models" / "lowres_2d"
    assert (models / "model.pt").is_file()
    saved = read_json(models / "training_params.json")
    assert saved["spatial_dims"] == 2 and saved["input_size"] == 64 and saved["head_stages"] == 1


def test_evaluation_writes_the_per_class_table(data, trained):
    root = trained["root"]
    run_workflow(BUNDLE, [*TRAIN, "evaluate_lowres_2d.json"], "train", root, **data, num_workers=0)
    out = root / "eval" / "lowres_2d"
    with open(out / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == list(CLASSES.values())
    for r in rows:
        assert int(r["volumes"]) == 2
        dice, jac = float(r["pooled_dice"]), float(r["pooled_jaccard"])
        assert jac == pytest.approx(dice / (2 - dice), abs=1e-6)  # one confusion matrix behind both
        assert dice >= 0.5, rows
    # the per-volume columns are MONAI's MeanDice of the same cases, computed independently
    summary = dict(line.strip().split(",") for line in open(out / "metrics.csv"))
    per_volume = np.mean([float(r["volume_dice"]) for r in rows])
    assert per_volume == pytest.approx(float(summary["val_mean_dice"]), abs=1e-4)
    raw = (out / "val_mean_dice_raw.csv").read_text().splitlines()
    assert raw[0] == "filename,class0,class1,class2,mean" and len(raw) == 3


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def test_inference_writes_brats_labels_on_the_t1_grid(data, trained, tmp_path):
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json", "inference_lowres_2d.json"], "infer", trained["root"],
                 dataset_dir=data["dataset_dir"], case_pattern="BraTS20_Training_00[47]", output_dir=str(out))
    preds = sorted(out.glob("*_seg.nii.gz"))
    assert [p.name for p in preds] == ["BraTS20_Training_004_seg.nii.gz", "BraTS20_Training_007_seg.nii.gz"]
    for pred_file in preds:
        case = pred_file.name[: -len("_seg.nii.gz")]
        t1 = nib.load(os.path.join(data["dataset_dir"], case, f"{case}_t1.nii"))
        pred = nib.load(pred_file)
        assert pred.shape == t1.shape
        np.testing.assert_allclose(pred.affine, t1.affine, atol=1e-4)
        values = np.asarray(pred.dataobj)
        label = np.asarray(nib.load(os.path.join(data["dataset_dir"], case, f"{case}_seg.nii")).dataobj)
        assert set(np.unique(values).tolist()) <= {0, 1, 2, 4}
        for value, name in CLASSES.items():
            assert _dice(values == value, label == value) >= 0.6, (case, name)


def test_metadata_describes_the_2d_network():
    d = bundle_dir(BUNDLE) / "configs"
    meta = d / "metadata_lowres_2d.json"
    verify_metadata(meta_file=str(meta), filepath=str(SCHEMA))
    fmt = json.loads(meta.read_text())["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 4 and len(fmt["inputs"]["image"]["spatial_shape"]) == 2
    assert fmt["outputs"]["pred"]["num_channels"] == 4
    verify_net_in_out(net_id="network_def", meta_file=str(meta), config_file=[str(d / c) for c in TRAIN],
                      n=4, bundle_root=str(bundle_dir(BUNDLE)), init_filters=4)


def test_the_experiment_prints_table_iii_per_class(tmp_path):
    table = lowres_experiment.run(str(tmp_path), bundle="brats", tiny=True, threads=1)
    lines = table.splitlines()
    assert "J NCR/NET" in lines[0] and "D ET" in lines[0] and "slices/s torch" in lines[0]
    rows = [r for r in lines[2:] if r.startswith("| 16x16")]
    assert [r.split(" | ")[1] for r in rows] == ["ELU-Net, upsampled", "ELU-Net + head + multi-scale loss"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(0.0 <= float(v) <= 1.0 for v in cells[5:14])  # Jaccard, Dice per class and means
        assert float(cells[-2]) > 0 and "(" in cells[-1]  # slices/s with torch and with the chosen engine
    saved = json.loads((tmp_path / "results.json").read_text())["results"]
    assert {r["variant"] for r in saved} == {"head", "plain"}
    per_class = saved[0]["per_class"]
    with open(tmp_path / "runs" / "fold0" / "16_head" / "eval" / "lowres_2d" / "per_class.csv") as f:
        assert [r["class"] for r in csv.DictReader(f)] == [c["class"] for c in per_class]


def test_experiment_threads_reach_the_bundle(tmp_path, monkeypatch):
    """``--threads N`` holds for the trainings too: the bundle's ``cpu_threads`` ("auto") would pick its own."""
    from common.experiments import lowres_brats

    seen = {}

    class Stop(Exception):
        pass

    def first_workflow(bundle_dir, configs, workflow_type, verbose, **override):
        seen.update(override, configs=configs)
        raise Stop

    monkeypatch.setattr(lowres_brats, "run_workflow", first_workflow)
    with pytest.raises(Stop):
        lowres_experiment.run(str(tmp_path), bundle="brats", tiny=True, threads=1)
    assert seen["cpu_threads"] == 1 and seen["configs"] == TRAIN
