"""Slab-wise and cascade configs of the LiTS and BraTS bundles, run the way a user runs them.

The LiTS tests train every model briefly on look-alike CT and check that the slab-wise model and the cascade
learn the liver; BraTS runs the same configs for one epoch to check its 4-channel / z-scored variant end to
end. ``common.experiments.cascade`` drives the same configs for the Dice comparison in the model cards.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bundle_helpers import (
    ENGINE_SETTINGS,
    ROOT,
    agreement,
    assert_inference_applies,
    assert_strategy_record,
    bundle_dir,
    engine_used,
    read_json,
    read_metrics,
    run_workflow,
)
from monai.bundle import ConfigParser
from monai.networks.utils import one_hot
from monai.transforms import Compose

from common.experiments.cascade import make_data

LITS, BRATS = "lits_liver_ct_segmentation", "brats_tumor_mri_segmentation"
TASKS = {LITS: "lits", BRATS: "brats"}
OVERLAYS = ["train_slab.json", "evaluate_slab.json", "inference_slab.json", "train_cascade_stage1.json",
            "train_cascade_stage2.json", "train_cascade_stage2_predicted.json", "evaluate_cascade.json",
            "inference_cascade.json"]
CASCADE = ["train_cascade_stage1.json", "train_cascade_stage2.json", "evaluate_cascade.json", "inference_cascade.json"]
# Look-alike volumes are ~48^3: factor 0.5 leaves stage 1 a grid worth learning (the bundles' 0.2/0.3 are for
# real CT/MR sizes); 64^3 patches make train.json a whole-volume model.
TINY = {"num_workers": 0, "cache_rate": 1.0, "init_filters": 16, "factor": 0.5, "patch_size": [64, 64, 64]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _parser(bundle: str, files: list[str]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle_dir(bundle) / "configs" / f) for f in files])
    return parser


# ------------------------------------------------------------------------------------------ config checks
@pytest.mark.parametrize("bundle", [LITS, BRATS])
def test_cascade_overlays_agree_on_the_shared_settings(bundle):
    configs = {name: read_json(bundle_dir(bundle) / "configs" / name) for name in OVERLAYS}
    slab_configs = ["train_slab.json", "evaluate_slab.json", "inference_slab.json", "train_cascade_stage2.json",
                    "evaluate_cascade.json", "inference_cascade.json"]
    for key, names in {"factor": CASCADE, "depth": slab_configs + ["train_cascade_stage1.json"],
                       "slab_size": slab_configs, "slab_axis": slab_configs}.items():
        values = {configs[n][key] for n in names}
        assert len(values) == 1, f"{key} differs across {names}: {values}"
    factor = configs["train_cascade_stage1.json"]["factor"]
    assert factor == (0.2 if bundle == LITS else 0.3)  # the slab-wise cascade study's defaults
    # stage 1 is z-scored again after down-sampling exactly when the cascade inferer does so
    stage1 = configs["train_cascade_stage1.json"]["stage1_transforms"]
    renorm = any(t["_target_"] == "NormalizeIntensityd" for t in stage1)
    for name in ("evaluate_cascade.json", "inference_cascade.json", "train_cascade_stage2_predicted.json"):
        assert configs[name]["renormalize"] is renorm, name
    assert renorm is (bundle == BRATS)
    # each stage's checkpoints are read where they are written
    stage1_dir = configs["train_cascade_stage1.json"]["ckpt_dir"]
    for name in ("evaluate_cascade.json", "inference_cascade.json", "train_cascade_stage2_predicted.json"):
        assert configs[name]["stage1_ckpt"] == stage1_dir[:-1] + "/model.pt'", name
    for name in ("evaluate_cascade.json", "inference_cascade.json"):
        assert configs[name]["ckpt_dir"] == configs["train_cascade_stage2.json"]["ckpt_dir"]
    assert len({configs[n]["ckpt_dir"] for n in ("train_slab.json", "train_cascade_stage1.json",
                                                  "train_cascade_stage2.json")}) == 3  # no shared resume files


@pytest.mark.parametrize("bundle", [LITS, BRATS])
@pytest.mark.parametrize("files", [["train.json", "train_cascade_stage2.json"],
                                   ["train.json", "evaluate.json", "evaluate_cascade.json"],
                                   ["inference.json", "inference_cascade.json"]])
def test_stage2_network_takes_the_image_plus_one_channel_per_foreground_class(bundle, files):
    parser = _parser(bundle, files)
    channels, classes = parser.get_parsed_content("in_channels"), parser.get_parsed_content("num_classes")
    net = parser.get_parsed_content("network_def")
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    assert first.in_channels == channels + classes - 1 == (2 if bundle == LITS else 5)
    assert net.multiple == [16, 16, 16]  # depth 4: 16-voxel slabs are the smallest valid thickness


@pytest.fixture(scope="module")
def lits_data(tmp_path_factory) -> dict:
    return make_data("lits", tmp_path_factory.mktemp("cascade_lits"), cases=8, size=48, seed=0)


def test_stage2_training_batches_carry_the_guidance_channels_as_slabs(lits_data):
    parser = _parser(LITS, ["train.json", "train_cascade_stage2.json"])
    parser.parse()
    for key, value in {**lits_data, **TINY}.items():
        parser[key] = value
    item = parser.get_parsed_content("train#dataset")[0]  # num_samples slabs of one volume
    assert len(item) == parser.get_parsed_content("num_samples") == 2
    image, label = item[0]["image"], item[0]["label"]
    assert image.shape[0] == 2 and image.shape[-1] == 16  # CT + liver guidance; 16-voxel slab on the last axis
    assert image.shape[1] % 16 == 0 and image.shape[2] % 16 == 0
    guide = image[1]
    assert set(torch.unique(guide).tolist()) <= {0.0, 1.0}
    # the guidance is the coarse label: it overlaps the true liver but is not a copy of it
    fg = label[0] > 0
    assert fg.any() and guide[fg].float().mean() > 0.8
    assert not torch.equal(guide > 0, fg)


@pytest.mark.parametrize("bundle", [LITS, BRATS])
def test_stage2_augmentation_moves_the_guidance_with_the_image_but_leaves_its_values(bundle):
    """Spatial transforms take the guidance (nearest, so it stays 0/1 as at inference); intensity ones do not."""
    parser = _parser(bundle, ["train.json", "train_cascade_stage2.json"])
    transforms = parser.get_parsed_content("train#preprocessing").transforms
    names = [type(t).__name__ for t in transforms]
    assert names.index("DownUpSampleLabeld") < names.index("RandSlabd") < names.index("ConcatItemsd")
    spatial = {"RandSlabd", "RandAffined", "RandFlipd"}
    for t in transforms[names.index("DownUpSampleLabeld") + 1 : names.index("ConcatItemsd")]:
        keys = getattr(t, "keys", ())
        assert ("guide" in keys) == (type(t).__name__ in spatial), (type(t).__name__, keys)
        if type(t).__name__ == "RandAffined":
            assert list(t.mode) == ["bilinear", "nearest", "nearest"]


# ---------------------------------------------------------------------------------------- LiTS end to end
@pytest.fixture(scope="module")
def lits_trained(lits_data, tmp_path_factory) -> dict:
    """The cascade's two stages and the slab-wise model, trained briefly with the bundle's configs."""
    root = tmp_path_factory.mktemp("cascade_lits_bundle")
    configs = root / "configs"
    shutil.copytree(bundle_dir(LITS) / "configs", configs)
    from common.data.fingerprint import fingerprint  # step 1 of the model card: statistics of the fold

    fingerprint(lits_data["datalist"], lits_data["dataset_dir"], fold=0, bundle_dir=str(root))
    best = {}
    for name, files in {"slab": ["train.json", "train_slab.json"],
                        "stage1": ["train.json", "train_cascade_stage1.json"],
                        "stage2": ["train.json", "train_cascade_stage2.json"]}.items():
        wf = run_workflow(LITS, files, "train", root, configs_dir=configs, **lits_data, **TINY, epochs=10,
                          val_interval=2, learning_rate=3e-3)
        best[name] = wf.parser.get_parsed_content("validate#evaluator").state.best_metric
    return {"root": root, "configs": configs, "best": best}


def test_slab_wise_training_and_both_cascade_stages_learn_the_liver(lits_trained):
    best = lits_trained["best"]
    assert best["slab"] >= 0.6, best
    assert best["stage1"] >= 0.6, best
    assert best["stage2"] >= 0.8, best  # with ground-truth guidance
    models = lits_trained["root"] / "models"
    for sub in ("slab", "cascade_stage1", "cascade"):
        assert (models / sub / "model.pt").exists() and (models / sub / "last_checkpoint_epoch=10.pt").exists()


def test_evaluate_cascade_scores_the_real_cascade_and_records_its_post_processing(lits_data, lits_trained):
    root, configs = lits_trained["root"], lits_trained["configs"]
    run_workflow(LITS, ["train.json", "evaluate.json", "evaluate_cascade.json"], "train", root, configs_dir=configs,
                 **lits_data, **TINY)
    assert read_metrics(root / "eval" / "cascade")["val_mean_dice"] >= 0.7  # stage-1 guidance, not ground truth
    assert_strategy_record(root / "eval" / "cascade", root / "models" / "cascade" / "postprocessing.json")
    run_workflow(LITS, ["train.json", "evaluate.json", "evaluate_slab.json"], "train", root, configs_dir=configs,
                 **lits_data, **TINY)
    assert read_metrics(root / "eval" / "slab")["val_mean_dice"] >= 0.6  # the slab-wise model's own floor
    assert_strategy_record(root / "eval" / "slab", root / "models" / "slab" / "postprocessing.json")


@pytest.mark.parametrize("overlay", ["inference_cascade.json", "inference_slab.json"])
def test_inference_writes_one_mask_per_volume_on_its_grid(lits_data, lits_trained, overlay, tmp_path):
    out = tmp_path / "pred"
    wf = run_workflow(LITS, ["inference.json", overlay], "infer", lits_trained["root"],
                      configs_dir=lits_trained["configs"], dataset_dir=lits_data["dataset_dir"], output_dir=str(out),
                      **TINY)
    record = lits_trained["root"] / "models" / ("cascade" if "cascade" in overlay else "slab") / "postprocessing.json"
    assert_inference_applies(wf, read_json(record)["strategy"] if record.exists() else "none")
    preds = sorted(out.glob("*_seg.nii.gz"))
    assert len(preds) == 8
    dices = []
    for pred_path in preds:
        n = pred_path.name.split("-")[1].split("_")[0]
        image = nib.load(Path(lits_data["dataset_dir"]) / f"volume-{n}.nii")
        pred = nib.load(pred_path)
        assert pred.shape == image.shape
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-4)
        truth = np.asarray(nib.load(Path(lits_data["dataset_dir"]) / f"segmentation-{n}.nii").dataobj) > 0
        p = np.asarray(pred.dataobj) > 0
        dices.append(2 * (p & truth).sum() / (p.sum() + truth.sum()))
    assert np.mean(dices) >= 0.7, dices


@pytest.mark.parametrize("variant", ["slab", "cascade"])
def test_slab_and_cascade_models_run_with_the_engines_and_agree_with_torch(lits_data, lits_trained, tmp_path,
                                                                           variant):
    """``pocket engines --variant slab|cascade`` exports models/slab or the cascade's stage 2 (models/cascade);
    inference_slab.json / inference_cascade.json run it through each fp32 engine."""
    from common.engines.choose import engines

    root = tmp_path / "bundle"
    shutil.copytree(lits_trained["root"] / "models", root / "models")
    engines(str(lits_trained["root"]), lits_data["dataset_dir"], lits_data["datalist"], variant=variant,
            bundle_root=str(root), **ENGINE_SETTINGS, **TINY)
    record = read_json(root / "models" / variant / "engine.json")
    assert record["variant"] == variant and not (root / "models" / "engine.json").exists()
    assert record["input_shape"][-1] == 16  # the network was exported on 16-voxel slabs
    assert record["input_shape"][1] == (2 if variant == "cascade" else 1)  # CT (+ the liver guidance)
    maps = {}
    for engine in ("torch", "openvino", "onnxruntime"):
        out = tmp_path / engine
        wf = run_workflow(LITS, ["inference.json", f"inference_{variant}.json"], "infer", root,
                          configs_dir=lits_trained["configs"], dataset_dir=lits_data["dataset_dir"],
                          output_dir=str(out), engine=engine, **TINY)
        assert engine_used(wf) == engine
        maps[engine] = {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob("*_seg.nii.gz"))}
    assert len(maps["torch"]) == 8
    for engine in ("openvino", "onnxruntime"):
        assert maps[engine].keys() == maps["torch"].keys()
        assert min(agreement(maps[engine][k], maps["torch"][k]) for k in maps["torch"]) >= 0.999


def test_stage2_can_train_on_stage1_predictions(lits_data, lits_trained, tmp_path):
    """nnU-Net's way, offered as an overlay: the guidance comes from the trained stage 1, cached per case."""
    root = tmp_path / "bundle"
    shutil.copytree(lits_trained["root"] / "models" / "cascade_stage1", root / "models" / "cascade_stage1")
    files = ["train.json", "train_cascade_stage2.json", "train_cascade_stage2_predicted.json"]
    wf = run_workflow(LITS, files, "train", root, configs_dir=lits_trained["configs"], **lits_data, **TINY, epochs=1)
    guidance = wf.parser.get_parsed_content("guidance_transforms")[0]
    assert type(guidance).__name__ == "Stage1Predictiond"
    assert not guidance.network.training
    assert (root / "models" / "cascade" / "last_checkpoint_epoch=1.pt").exists()
    # one validation case: its guidance equals the one built by hand from the trained stage 1's output
    case = Compose(wf.parser.get_parsed_content("train#deterministic_transforms"))(
        wf.parser.get_parsed_content("validate#dataset#data")[0])
    guide = torch.as_tensor(guidance(case)["guide"])
    want = _stage1_guidance_by_hand(wf, root / "models" / "cascade_stage1" / "model.pt", case["image"])
    assert want.any() and torch.equal(guide, want)
    liver = torch.as_tensor(case["label"])[0] > 0
    assert 2 * (want[0].bool() & liver).sum() / (want[0].sum() + liver.sum()) > 0.5  # stage 1 finds the liver


def _stage1_guidance_by_hand(wf, checkpoint: Path, image: torch.Tensor) -> torch.Tensor:
    """Stage 1 loaded from ``checkpoint`` on ``image`` down-sampled by ``factor`` (trilinear, not z-scored again
    for LiTS), zero-padded at the end to its size multiple, argmax, one-hot, up-sampled per class, argmax, the
    foreground channels."""
    assert wf.parser.get_parsed_content("renormalize") is False
    net = wf.parser.get_parsed_content("stage1_def", lazy=False)  # a fresh network, not the transform's
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("model", state))
    x = torch.as_tensor(image)[None].float()
    size = [int(s * wf.parser.get_parsed_content("factor")) for s in x.shape[2:]]
    low = F.interpolate(x, size=size, mode="trilinear", align_corners=True)
    m = net.multiple[0]
    pad = [p for s in reversed(size) for p in (0, -s % m)]
    with torch.no_grad():
        logits = net.eval()(F.pad(low, pad))[..., : size[0], : size[1], : size[2]]
    k = logits.shape[1]
    up = F.interpolate(one_hot(logits.argmax(1, keepdim=True), k, dim=1), size=list(x.shape[2:]), mode="trilinear",
                       align_corners=True)
    return one_hot(up.argmax(1, keepdim=True), k, dim=1)[0, 1:]


def test_cascade_without_a_trained_stage1_names_the_missing_checkpoint(lits_data, lits_trained, tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(lits_trained["root"] / "models" / "cascade", root / "models" / "cascade")
    out = tmp_path / "pred"
    with pytest.raises(Exception) as err:
        run_workflow(LITS, ["inference.json", "inference_cascade.json"], "infer", root,
                     configs_dir=lits_trained["configs"], dataset_dir=lits_data["dataset_dir"], output_dir=str(out),
                     **TINY)
    chain = []
    e = err.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__
    assert any("cascade_stage1/model.pt: checkpoint not found" in m for m in chain), chain
    assert not out.exists() or not any(out.iterdir())


# --------------------------------------------------------------------------------------- BraTS end to end
def test_brats_slab_and_cascade_configs_run_end_to_end(tmp_path):
    """4 MR channels, brain crop, z-score again on the stage-1 grid; one epoch each, then one label map per
    case on the input grid."""
    data = make_data("brats", tmp_path, cases=5, size=48, seed=1)
    tiny = {**TINY, "init_filters": 8, "factor": 0.7}  # a 2^3 stage-1 bottleneck: BatchNorm needs >1 value
    root = tmp_path / "bundle"
    for files in (["train.json", "train_slab.json"], ["train.json", "train_cascade_stage1.json"],
                  ["train.json", "train_cascade_stage2.json"]):
        run_workflow(BRATS, files, "train", root, **data, **tiny, epochs=1, val_interval=1)
    n_val = sum(e["fold"] == 0 for e in read_json(data["datalist"])["training"])
    records = {}
    for model in ("slab", "cascade"):  # each model scored on the validation cases, its strategy recorded
        run_workflow(BRATS, ["train.json", "evaluate.json", f"evaluate_{model}.json"], "train", root, **data, **tiny)
        records[model] = assert_strategy_record(root / "eval" / model, root / "models" / model / "postprocessing.json")
        per_case = (root / "eval" / model / "val_mean_dice_raw.csv").read_text().splitlines()
        assert per_case[0] == "filename,class0,mean" and len(per_case) == 1 + n_val, per_case  # whole tumour
        assert {"val_hd95", "val_asd"} <= set(read_metrics(root / "eval" / model)), model  # one epoch: no floor
    out = tmp_path / "pred"
    wf = run_workflow(BRATS, ["inference.json", "inference_cascade.json"], "infer", root,
                      dataset_dir=data["dataset_dir"], output_dir=str(out), **tiny)
    assert_inference_applies(wf, records["cascade"]["strategy"])
    preds = sorted(p.name for p in out.glob("*.nii.gz"))
    assert preds == [f"BraTS20_Training_{n:03d}_seg.nii.gz" for n in range(1, 6)]
    for name in preds:  # every prediction on its own case's grid
        case = name[: -len("_seg.nii.gz")]
        t1 = nib.load(Path(data["dataset_dir"]) / case / f"{case}_t1.nii")
        pred = nib.load(out / name)
        assert pred.shape == t1.shape, name
        np.testing.assert_allclose(pred.affine, t1.affine, atol=1e-4, err_msg=name)
        assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 1}, name


def test_readme_and_model_cards_give_the_cascade_commands():
    for bundle in (LITS, BRATS):
        card = (bundle_dir(bundle) / "docs" / "README.md").read_text()
        for name in OVERLAYS:
            assert name in card, f"{bundle} model card does not mention {name}"
    assert "pocket experiment cascade" in (ROOT / "README.md").read_text()
