"""The CPU training recipe: what its overlays resolve to, the 3D up-scaling head on the label's grid, learning with
both overlays, the disk cache of the preprocessing and the wall-clock budget."""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.transforms import Compose, MapTransform, RandFlipd

from common.data.caching import cached_dataset
from common.losses import MultiScaleLoss, loss_for_arch
from common.networks import get_network
from common.training.time_budget import TimeBudget
from tests.bundle_helpers import bundle_dir, nfbs_lookalike, run_workflow

NFBS = "nfbs_brain_mri_segmentation"
RECIPE_BUNDLES = ["nfbs_brain_mri_segmentation", "lits_liver_ct_segmentation", "brats_tumor_mri_segmentation"]


def _resolve(bundle: str, files: list[str], keys: list[str]) -> dict:
    parser = ConfigParser()
    parser.read_config([str(bundle_dir(bundle) / "configs" / f) for f in files])
    parser["bundle_root"] = "/tmp/unused"
    return {k: parser.get_parsed_content(k) for k in keys}


KEYS = ["patch_size", "init_filters", "depth", "head_stages", "cache", "time_budget_minutes", "learning_rate"]


@pytest.mark.parametrize("bundle", RECIPE_BUNDLES)
def test_cpu_overlays_resolve_to_the_measured_recipe(bundle):
    cpu = _resolve(bundle, ["train.json", "train_cpu.json"], KEYS)
    assert cpu == {"patch_size": [64, 64, 64], "init_filters": 16, "depth": 4, "head_stages": None, "cache": "disk",
                   "time_budget_minutes": 60, "learning_rate": 0.001}
    head = _resolve(bundle, ["train.json", "train_cpu.json", "train_cpu_head.json"], KEYS)
    # the head variant crops twice the voxels a side, pools them inside the network: same backbone, same depth
    assert head == {**cpu, "patch_size": [128, 128, 128], "head_stages": 1}
    defaults = _resolve(bundle, ["train.json"], KEYS)
    assert defaults["cache"] == "memory" and defaults["time_budget_minutes"] is None and defaults["depth"] == 5


@pytest.mark.parametrize("bundle, data_spacing", [(NFBS, [1.0, 1.0, 1.0]), ("lits_liver_ct_segmentation", None)])
def test_cpu_overlays_set_the_working_spacing(bundle, data_spacing):
    if data_spacing is None:  # LiTS: the fingerprint's
        data_spacing = _resolve(bundle, ["train.json"], ["fingerprint"])["fingerprint"]["spacing"]
    assert _resolve(bundle, ["train.json"], ["spacing"])["spacing"] == data_spacing
    coarse = _resolve(bundle, ["train.json", "train_cpu.json"], ["spacing"])["spacing"]
    assert coarse == pytest.approx([2 * s for s in data_spacing])
    # with the head the data stay at their spacing; the backbone sees twice it through the pooling
    assert _resolve(bundle, ["train.json", "train_cpu.json", "train_cpu_head.json"], ["spacing"])["spacing"] == \
        data_spacing


def test_the_3d_head_predicts_on_the_label_grid():
    net = get_network("unet", 3, 1, 2, init_filters=8, depth=2, pocket=True, head_stages=1, pool_input=True)
    x, label = torch.randn(2, 1, 32, 32, 32), torch.randint(0, 2, (2, 1, 32, 32, 32))
    scales = net.train()(x)
    assert [tuple(s.shape[2:]) for s in scales] == [(16, 16, 16), (32, 32, 32)]  # backbone at half, head on the label
    loss = MultiScaleLoss(loss_for_arch("unet"))(scales, label)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in net.parameters())  # both scales train the backbone, the last the stage
    assert net.eval()(x).shape == (2, 2, 32, 32, 32)
    assert net.multiple == [8, 8, 8]  # 2^depth of the backbone times the pooling


class CountCalls(MapTransform):
    """A deterministic transform that counts how often it runs (the expensive preprocessing stands in)."""

    calls = 0

    def __init__(self, keys, offset: float = 0.0):
        super().__init__(keys)
        self.offset = offset

    def __call__(self, data):
        CountCalls.calls += 1
        d = dict(data)
        d["image"] = np.full((1, 4, 4, 4), float(d["value"]) + self.offset, dtype=np.float32)
        return d


def _pass(data, cache_dir, offset=0.0):
    ds = cached_dataset(data, Compose([CountCalls("image", offset=offset), RandFlipd("image", prob=0.5)]),
                        cache="disk", cache_dir=cache_dir)
    return [float(item["image"].mean()) for item in ds]


def test_the_disk_cache_is_reused_and_invalidated(tmp_path):
    files = []
    for i in range(3):
        f = tmp_path / f"case{i}.txt"
        f.write_text(str(i))
        files.append({"image": str(f), "value": i})
    cache = tmp_path / "cache"
    CountCalls.calls = 0
    first = _pass(files, cache)
    assert CountCalls.calls == 3
    assert _pass(files, cache) == first and CountCalls.calls == 3  # second epoch, and a new dataset (second run)
    assert _pass(files, cache, offset=1.0) == [v + 1.0 for v in first]  # a changed setting of the preprocessing
    assert CountCalls.calls == 6
    assert _pass(files, cache) == first and CountCalls.calls == 6  # the old cache is still valid for the old setting
    time.sleep(0.01)
    Path(files[0]["image"]).write_text("changed")  # a replaced file is preprocessed again
    _pass(files, cache)
    assert CountCalls.calls == 7


def _toy_engine(seconds_per_step: float, model: torch.nn.Module, opt: torch.optim.Optimizer) -> Engine:
    def step(engine, batch):
        time.sleep(seconds_per_step)
        return {"loss": torch.tensor(1.0)}

    return Engine(step)


def test_the_time_budget_stops_decays_and_carries_over_a_resume(tmp_path):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    budget = TimeBudget(minutes=1.2 / 60, optimizer=opt, snapshot_minutes=0.5 / 60, snapshot_dir=tmp_path,
                        network=model)
    engine = _toy_engine(0.05, model, opt)
    budget.attach(engine)
    engine.run(range(1000), max_epochs=100)
    first_steps = engine.state.iteration
    assert 0 < first_steps < 100_000 and budget.state_dict()["elapsed_s"] >= 1.2  # stopped by the budget
    assert opt.param_groups[0]["lr"] < 0.2  # decayed towards 0 over the budget
    with open(tmp_path / "snapshots.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["minutes"]) for r in rows] == [round(0.5 / 60, 2), round(1.0 / 60, 2), round(1.2 / 60, 2)]
    assert all((tmp_path / r["file"]).is_file() for r in rows)
    # a resume with 1.0 s already spent: 0.2 s are left
    resumed = TimeBudget(minutes=1.2 / 60, optimizer=opt)
    resumed.load_state_dict({"elapsed_s": 1.0, "cpu_s": 1.0})
    engine2 = _toy_engine(0.05, model, opt)
    resumed.attach(engine2)
    engine2.run(range(1000), max_epochs=100)
    # steps sleep 0.05 s whatever the load: the resumed run had 0.2 s left, the first 1.2 s
    assert 0 < engine2.state.iteration < first_steps / 2
    assert resumed.state_dict()["elapsed_s"] >= 1.2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return nfbs_lookalike(tmp_path_factory.mktemp("nfbs_cpu"), cases=8, size=48)


TINY = {"num_workers": 0, "init_filters": 8, "time_budget_minutes": None, "epochs": 30, "val_interval": 10,
        "learning_rate": 3e-3, "num_samples": 4}


@pytest.mark.parametrize("head", [False, True], ids=["coarse_spacing", "head"])
def test_the_cpu_recipe_learns_and_writes_masks_on_the_input_grid(data, tmp_path, head):
    overlays = ["train.json", "train_cpu.json"] + (["train_cpu_head.json"] if head else [])
    # look-alike heads are ~48 voxels a side at ~1 mm: patches a quarter of the recipe's, the same 2x coarser backbone
    tiny = {**TINY, "patch_size": [32, 32, 32] if head else [16, 16, 16], "depth": 2}
    wf = run_workflow(NFBS, overlays, "train", tmp_path, **data, **tiny)
    assert wf.parser.get_parsed_content("validate#evaluator").state.best_metric >= 0.8
    assert any((tmp_path / "cache").glob("*.pt"))  # the recipe's disk cache
    out = tmp_path / "masks"
    run_workflow(NFBS, ["inference.json"], "infer", tmp_path, dataset_dir=data["dataset_dir"], output_dir=str(out))
    images = sorted(Path(data["dataset_dir"]).glob("*/sub-*_ses-NFB3_T1w.nii.gz"))
    masks = sorted(out.glob("*_seg.nii.gz"))
    assert len(masks) == len(images)
    for image, mask in zip(images, masks):
        a, b = nib.load(str(image)), nib.load(str(mask))
        assert a.shape == b.shape and np.allclose(a.affine, b.affine, atol=1e-4), mask


def test_time_to_accuracy_scores_its_snapshots_as_a_rescoring_does(data, tmp_path):
    """The command trains in a child process for a budget, snapshots on the clock and scores every snapshot with
    inference.json on the input grid; the CSV's Dice must equal a fresh scoring of the saved snapshot."""
    from common.experiments import time_to_accuracy as tta

    work = tmp_path / "tta"
    small = dict(threads=1, num_workers=0, patch_size=[32, 32, 32], depth=2, init_filters=8, learning_rate=3e-3,
                 num_samples=4)
    first = tta.run(bundle="nfbs", recipes="cpu_head", widths="pocket", minutes=0.5, snapshot_minutes=0.25,
                    score_minutes=(0.5,), work_dir=str(work), dataset_dir=data["dataset_dir"],
                    datalist=data["datalist"], **small)
    with open(work / "time_to_accuracy.csv") as f:  # only the snapshot asked for is scored ...
        assert [float(r["minutes"]) for r in csv.DictReader(f)] == [0.5]
    assert "@0.25" not in first
    text = tta.run(bundle="nfbs", recipes="cpu_head", widths="pocket", minutes=0.5, snapshot_minutes=0.25,
                   work_dir=str(work), dataset_dir=data["dataset_dir"], datalist=data["datalist"], **small)
    with open(work / "time_to_accuracy.csv") as f:  # ... and a rerun without score_minutes scores the other one
        rows = sorted(csv.DictReader(f), key=lambda r: float(r["minutes"]))
    assert [float(r["minutes"]) for r in rows] == [0.25, 0.5]
    assert all(float(r["wall_s"]) >= 60 * float(r["minutes"]) and int(r["iteration"]) > 0 for r in rows)
    assert float(rows[0]["cpu_s"]) > 0 and float(rows[0]["peak_rss_gb"]) > 0
    from common.networks import count_parameters  # the table's parameters are those of the width asked for

    pocket_head = get_network("unet", 3, 1, 2, init_filters=8, depth=2, pocket=True, head_stages=1, pool_input=True)
    assert {int(r["parameters"]) for r in rows} == {count_parameters(pocket_head)}
    assert "| cpu_head | pocket |" in text and (work / "time_to_accuracy.png").stat().st_size > 10_000
    from common.benchmarks.profile import machine_summary

    assert {r["machine"] for r in rows} == {machine_summary()}  # tables gathered over sessions name their CPU
    assert text.splitlines()[-1] == f"Machine: {machine_summary()}."
    run_dir = work / "runs" / "cpu_head_pocket"
    from common.data.datalists import load_fold

    val = load_fold(data["datalist"], data["dataset_dir"], 0, "val")
    last = run_dir / "models" / "snapshots" / rows[-1]["snapshot"]
    rescore = tmp_path / "rescore"
    (rescore / "models").mkdir(parents=True)
    shutil.copy(run_dir / "models" / "training_params.json", rescore / "models")
    again = tta.score_snapshot(work / "bundle" / "configs", rescore, last, val, data["dataset_dir"], 1)
    assert float(rows[-1]["val_dice"]) == pytest.approx(float(np.mean(again)), abs=1e-4)
    # a rerun finds everything done: no training, no scoring, the same table
    assert tta.run(bundle="nfbs", recipes="cpu_head", minutes=0.5, snapshot_minutes=0.25, work_dir=str(work),
                   dataset_dir=data["dataset_dir"], datalist=data["datalist"]) == text


def test_time_to_accuracy_overrides_reach_the_bundle_with_their_types(tmp_path, monkeypatch):
    """The training child gets the overrides as its last config file, with their types and nested keys intact.

    On the command line (Python Fire) ``--pocket false`` arrived as the truthy string ``'false'``: before this was
    pinned, ``--widths full`` trained a pocket network. The command ``_train`` starts is captured and read back.
    """
    import json
    import subprocess
    import sys

    import common.experiments.time_to_accuracy as tta

    started, real_popen = [], subprocess.Popen

    def fake_popen(cmd, **kwargs):  # record the training command, run a no-op child in its place
        started.append(cmd)
        return real_popen([sys.executable, "-c", "pass"], **kwargs)

    monkeypatch.setattr(tta.subprocess, "Popen", fake_popen)
    override = {"pocket": False, "fold": 0, "time_budget_minutes": 0.5, "seed": None, "dataset_dir": "/data/2024",
                "validate#dataset#cache": "none", "patch_size": [64, 64, 64]}
    configs = bundle_dir("nfbs_brain_mri_segmentation") / "configs"
    tta._train(configs, ["train_cpu.json"], tmp_path, override)
    (cmd,) = started
    args = cmd[cmd.index("training") + 1:]
    flags = dict(zip(args[::2], args[1::2]))
    assert sorted(flags) == ["--bundle_root", "--config_file", "--logging_file", "--meta_file"]  # nothing for Fire
    parser = ConfigParser()
    parser.read_config(ConfigParser.load_config_files(json.loads(flags["--config_file"])))
    for key, value in override.items():
        assert parser[key] == value and type(parser[key]) is type(value), key
    from common.networks import count_parameters  # and the network built is the full width

    full = count_parameters(parser.get_parsed_content("network_def"))
    parser["pocket"] = True
    assert full > 10 * count_parameters(parser.get_parsed_content("network_def", lazy=False))


def test_time_to_accuracy_stops_when_the_width_trained_is_not_the_one_asked(data, tmp_path):
    """A finished run whose training recorded another width is an error, not a row labelled with the wrong width."""
    import common.experiments.time_to_accuracy as tta

    run_dir = tmp_path / "runs" / "cpu_full"
    (run_dir / "models").mkdir(parents=True)
    (run_dir / "finished").write_text("")
    (run_dir / "models" / "training_params.json").write_text('{"pocket": "false"}')  # what the old command recorded
    with pytest.raises(RuntimeError, match="was to train the full width"):
        tta.run(bundle="nfbs", recipes="cpu", widths="full", work_dir=str(tmp_path), dataset_dir=data["dataset_dir"],
                datalist=data["datalist"])
