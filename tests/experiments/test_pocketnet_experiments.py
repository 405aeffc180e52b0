"""The PocketNet experiments as commands: Table I end to end (locally and on Ray), resume rules, Table IV."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from bundle_helpers import assert_tensorboard_tags
from scipy import stats

from common import REPO_ROOT
from common.experiments import depth_ablation, full_vs_pocket
from common.experiments.casewise import METRICS
from common.experiments.runs import Run, config_hash, prepare, state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: a tiny grid: 2 archs x 2 variants x 2 folds, a few epochs on 10 look-alike cases of 32^3
GRID = dict(task="nfbs", archs="unet,resnet", variants="full,pocket", folds=2, cases=10, size=32)
TINY = dict(epochs=3, val_interval=3, init_filters=4, patch_size=[32, 32, 32], learning_rate=3e-3, num_workers=0)


def _csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def table1(tmp_path_factory):
    out = tmp_path_factory.mktemp("table1")
    text = full_vs_pocket.run(**GRID, out=str(out), jobs=2, **TINY)  # two runs at a time, one thread each
    return out, text


def _check_report(out) -> None:
    """report.csv against the per-case raw CSVs of every run: means, medians, std and the Wilcoxon p."""
    report = {(r["arch"], r["variant"], r["metric"]): r for r in _csv(out / "report.csv")}
    assert len(report) == 2 * 2 * 3
    for arch in ("unet", "resnet"):
        values = {}
        for variant in ("full", "pocket"):
            for stem, title in METRICS.items():
                cases = {}
                for fold in (0, 1):
                    for row in _csv(out / "runs" / f"{arch}-{variant}" / f"fold{fold}" / "eval" / f"{stem}_raw.csv"):
                        cases[row["filename"]] = float(row["mean"])
                values[(variant, title)] = cases
                r = report[(arch, variant, title)]
                v = np.array(list(cases.values()))
                assert int(r["n"]) == len(cases) == 4  # 2 validation cases in each of 2 folds
                assert float(r["mean"]) == pytest.approx(v.mean(), rel=1e-6)
                assert float(r["median"]) == pytest.approx(np.median(v), rel=1e-6)
                assert float(r["std"]) == pytest.approx(v.std(ddof=1), rel=1e-6, abs=1e-9)
        for title in METRICS.values():
            full, pocket = values[("full", title)], values[("pocket", title)]
            assert set(full) == set(pocket)
            ids = sorted(full)
            diff = np.array([pocket[k] - full[k] for k in ids])
            r = report[(arch, "pocket", title)]
            expected = 1.0 if np.all(diff == 0) else stats.wilcoxon(diff).pvalue
            assert float(r["p_wilcoxon"]) == pytest.approx(expected)
            assert report[(arch, "full", title)]["p_wilcoxon"] == ""


@pytest.mark.slow
def test_table1_report_matches_the_per_case_files(table1):
    out, text = table1
    _check_report(out)
    # the Markdown table has one row per arch and variant, parameters from the trained networks
    rows = [line for line in text.splitlines() if re.match(r"\| (unet|resnet) \| (full|pocket) \|", line)]
    assert len(rows) == 4
    finished = json.loads((out / "runs" / "unet-full" / "fold0" / "finished.json").read_text())
    assert f"| unet | full | {finished['parameters'] / 1e6:.3f} | 4 |" in text
    assert "HD95 (mm)" in text and "ASD (mm)" in text and "## Runs" in text
    assert (out / "boxplots.png").stat().st_size > 10_000
    assert len(_csv(out / "cases.csv")) == 2 * 2 * 2 * 2


@pytest.mark.slow
def test_table1_rerun_skips_finished_runs_and_resumes_an_interrupted_one(table1, capsys):
    out, _ = table1
    (out / "runs" / "resnet-pocket" / "fold1" / "finished.json").unlink()
    before = {p: p.stat().st_mtime for p in (out / "runs").glob("*/*/finished.json")}
    capsys.readouterr()
    full_vs_pocket.run(**GRID, out=str(out), **TINY)
    printed = capsys.readouterr().out
    assert "8 runs: 7 finished before, 1 to resume, 0 to start" in printed
    after = {p: p.stat().st_mtime for p in (out / "runs").glob("*/*/finished.json")}
    assert all(after[p] == t for p, t in before.items())  # the finished runs were not touched
    assert (out / "runs" / "resnet-pocket" / "fold1" / "finished.json").is_file()
    _check_report(out)


def test_a_run_is_new_interrupted_or_finished_by_the_hash_of_its_merged_config(tmp_path):
    run = Run(name="unet-pocket/fold0", bundle="nfbs_brain_mri_segmentation", train=["train.json"],
              evaluate=["train.json", "evaluate.json"], overrides={"fold": 0, "epochs": 2})
    run_dir, st = prepare(run, tmp_path)
    assert st == "new" and json.loads((run_dir / "run.json").read_text())["hash"] == config_hash(run)
    (run_dir / "models").mkdir()
    assert prepare(run, tmp_path)[1] == "interrupted" and (run_dir / "models").is_dir()  # kept for the resume
    (run_dir / "finished.json").write_text(json.dumps({"hash": config_hash(run)}))
    assert state(run_dir, config_hash(run)) == "finished"
    more = Run(**{**run.__dict__, "cpus": 2})  # resources do not change the result
    assert config_hash(more) == config_hash(run)
    changed = Run(**{**run.__dict__, "overrides": {"fold": 0, "epochs": 3}})
    assert config_hash(changed) != config_hash(run)
    assert prepare(changed, tmp_path)[1] == "changed"
    assert not (run_dir / "models").exists() and not (run_dir / "finished.json").exists()  # started again


@pytest.fixture(scope="module")
def ray_installed():
    """Ray is an optional extra: installed here, with the pinned version, when the environment lacks it."""
    try:
        import ray  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-c",
                               str(REPO_ROOT / "requirements" / "constraints.txt"), "ray[tune]"])


@pytest.mark.slow
def test_the_same_grid_runs_through_a_local_ray_instance(table1, ray_installed, tmp_path):
    out = tmp_path / "ray"
    text = full_vs_pocket.run(**GRID, out=str(out), executor="ray", address="local", **TINY)
    _check_report(out)
    assert "| unet | pocket |" in text
    for run_dir in (out / "runs").glob("*/*"):
        assert "epoch 3/3, loss" in (run_dir / "log.txt").read_text()  # the training's progress line
    # each task ran the same child command as the local runs, with the same merged configs but for the data paths
    for run_dir in (out / "runs").glob("*/*"):
        local = json.loads((table1[0] / run_dir.relative_to(out) / "run.json").read_text())
        remote = json.loads((run_dir / "run.json").read_text())
        assert {k: v for k, v in remote["overrides"].items() if k not in ("dataset_dir", "datalist")} == \
            {k: v for k, v in local["overrides"].items() if k not in ("dataset_dir", "datalist")}


def _readme_table_iv() -> list[float]:
    line = next(x for x in (REPO_ROOT / "README.md").read_text().splitlines() if x.startswith("| Table IV"))
    ours = line.split("|")[2]
    return [float(v) for v in re.findall(r"[\d.]+(?=M)", ours)]


def test_ablation_levels_have_the_parameter_counts_of_table_iv():
    """The bundle's own network_def at the paper's setting (32 features, 128^3, depth 5) with double_until = L."""
    counts = depth_ablation.level_parameters("nfbs", init_filters=32, patch_size=[128, 128, 128])
    assert list(counts) == [5, 4, 3, 2, 1, 0]
    assert [round(c / 1e6, 2) for c in counts.values()] == _readme_table_iv() == [90.49, 60.07, 24.35, 8.39, 2.64,
                                                                                  0.76]


@pytest.mark.slow
def test_ablation_trains_every_level_with_its_own_width(tmp_path):
    tiny = {**TINY, "patch_size": [16, 16, 16]}  # depth 2: levels 2, 1, 0
    text = depth_ablation.run(task="nfbs", folds=1, cases=10, size=32, out=str(tmp_path), **tiny)
    counts = depth_ablation.level_parameters("nfbs", **tiny)
    assert list(counts) == [2, 1, 0] and counts[2] > counts[1] > counts[0]
    rows = _csv(tmp_path / "report.csv")
    for level, count in counts.items():
        dice = next(r for r in rows if r["level"] == str(level) and r["metric"] == "Dice")
        assert int(dice["parameters"]) == count and int(dice["n"]) == 2
        saved = json.loads((tmp_path / "runs" / f"unet-double-until-{level}" / "fold0" / "models" /
                            "training_params.json").read_text())
        assert saved["double_until"] == level and saved["pocket"] is False
        assert f"| {level} | {count / 1e6:.3f} | 2 |" in text


@pytest.mark.slow
def test_activation_means_are_those_a_hook_sees_in_the_bundles_own_evaluation(table1, tmp_path):
    """activations_unet.csv (what the plot shows) against a hook on the U-Net's ``head`` (its final 1x1 conv) while
    evaluate.json scores each fold's validation cases, in a copy of each run."""
    import shutil

    import torch
    from monai.bundle import ConfigWorkflow

    out, _ = table1
    assert (out / "activations_unet.png").stat().st_size > 5_000
    plotted = {}
    for row in _csv(out / "activations_unet.csv"):
        plotted.setdefault(row["variant"], {})[int(row["channel"])] = float(row["mean_activation"])
    for variant in ("full", "pocket"):
        total, voxels = 0.0, 0
        for fold in (0, 1):
            run_dir = tmp_path / variant / f"fold{fold}"
            shutil.copytree(out / "runs" / f"unet-{variant}" / f"fold{fold}", run_dir)
            spec = json.loads((run_dir / "run.json").read_text())
            configs = REPO_ROOT / "bundles" / spec["bundle"] / "configs"
            wf = ConfigWorkflow(config_file=[str(configs / f) for f in spec["evaluate"]], workflow_type="train",
                                meta_file=str(configs / "metadata.json"), bundle_root=str(run_dir),
                                **spec["overrides"])
            wf.initialize()
            seen: list[torch.Tensor] = []
            head = dict(wf.parser.get_parsed_content("network").named_modules())["head"]
            handle = head.register_forward_pre_hook(lambda _m, x, seen=seen: seen.append(x[0].detach().double()))
            wf.run()
            handle.remove()
            assert len(seen) >= 2  # the fold's two validation cases, one or more windows each
            total = total + sum(x.sum(dim=(0, 2, 3, 4)) for x in seen)
            voxels += sum(x[:, 0].numel() for x in seen)
        expected = (total / voxels).numpy()
        got = np.array([plotted[variant][c] for c in range(len(expected))])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_saturation_fractions_share_validation_and_test_cases(tmp_path, capsys):
    """20 look-alike cases: test = fold 0, validation = fold 1 (4 each), pool = 12; 1.5 % of 12 is skipped."""
    from common.experiments import saturation

    text = saturation.run(task="nfbs", variants="pocket", fractions="0.015,0.25,1", out=str(tmp_path), cases=20,
                          size=32, **TINY)
    assert "fraction 0.015 is skipped" in capsys.readouterr().out and "fraction 0.015 is skipped" in text
    split = json.loads((tmp_path / "split.json").read_text())
    assert {k: len(v) for k, v in split["train"].items()} == {"0.25": 3, "1": 12}
    assert set(split["train"]["0.25"]) <= set(split["train"]["1"])  # nested
    seen_val, seen_test = set(), set()
    for fraction, count in (("0.25", 3), ("1", 12)):
        spec = json.loads((tmp_path / "runs" / "unet-pocket" / f"fraction{fraction}" / "run.json").read_text())
        assert spec["overrides"]["train#random_transforms"] == saturation.NO_AUGMENTATION["train#random_transforms"]
        entries = json.loads(open(spec["train_overrides"]["datalist"]).read())["training"]
        val = {e["image"] for e in entries if e["fold"] == 0}
        train = {e["image"] for e in entries if e["fold"] == 1}
        assert len(train) == count and val == set(split["validation"]) and not val & train
        scored = {r["filename"] for r in _csv(tmp_path / "runs" / "unet-pocket" / f"fraction{fraction}" / "eval" /
                                              "val_mean_dice_raw.csv")}
        test = {spec["overrides"]["dataset_dir"] + "/" + c for c in split["test"]}
        assert scored == test and len(scored) == 4 and not scored & {spec["overrides"]["dataset_dir"] + "/" + c
                                                                     for c in train | val}
        seen_val.add(frozenset(val))
        seen_test.add(frozenset(scored))
    assert len(seen_val) == len(seen_test) == 1  # the same validation and test cases for every fraction
    rows = _csv(tmp_path / "report.csv")
    assert {(r["fraction"], r["training_cases"]) for r in rows} == {("0.25", "3"), ("1.0", "12")}
    assert (tmp_path / "saturation.png").stat().st_size > 10_000


@pytest.mark.slow
def test_covidx_table_gives_test_auc_with_a_bootstrap_interval_and_a_paired_p(tmp_path):
    """``table1 --task covidx``: each variant's AUC is MONAI's ROC AUC of its predictions.csv on the test split."""
    import torch
    from monai.metrics import compute_roc_auc

    full_vs_pocket.run(task="covidx", out=str(tmp_path), epochs=4, image_size=[64, 64], num_workers=0, batch_size=8,
                       learning_rate=1e-3, bootstrap=300)
    report = {r["variant"]: r for r in _csv(tmp_path / "report.csv")}
    testing = json.loads((tmp_path / "data" / "covidx_lookalike.json").read_text())["testing"]
    for variant in ("full", "pocket"):
        rows = _csv(tmp_path / "runs" / f"classifier-{variant}" / "eval" / "test" / "predictions.csv")
        assert len(rows) == len(testing) == int(report[variant]["n"])
        y = torch.tensor([int(r["label"]) for r in rows])
        p = torch.tensor([float(r["probability_positive"]) for r in rows])
        auc = float(report[variant]["auc"])
        assert auc == pytest.approx(compute_roc_auc(p, y), abs=1e-6)
        assert float(report[variant]["ci_low"]) <= auc <= float(report[variant]["ci_high"])
    full_auc, pocket_auc = float(report["full"]["auc"]), float(report["pocket"]["auc"])
    assert float(report["pocket"]["auc_difference"]) == pytest.approx(pocket_auc - full_auc)
    assert 0 < float(report["pocket"]["p_bootstrap"]) <= 1 and report["full"]["p_bootstrap"] == ""


def test_the_short_preset_is_the_short_papers_network_and_names_the_archs_it_defines(tmp_path):
    from monai.bundle import ConfigParser

    from common.errors import InvalidInputError

    configs = REPO_ROOT / "bundles" / "nfbs_brain_mri_segmentation" / "configs"
    counts = {}
    for pocket in (False, True):
        parser = ConfigParser()
        parser.read_config([str(configs / "train.json"), str(configs / "train_short.json")])
        parser["pocket"] = pocket
        counts[pocket] = sum(p.numel() for p in parser.get_parsed_content("network_def").parameters())
    assert counts == {False: 5_470_850, True: 150_066}  # README: short paper 3D U-Net full / pocket
    with pytest.raises(InvalidInputError, match="defines unet, resnet, densenet, not hrnet"):
        full_vs_pocket.run(task="nfbs", archs="unet,hrnet", preset="short", out=str(tmp_path))
    with pytest.raises(InvalidInputError, match="no preset 'short' for brats"):
        full_vs_pocket.run(task="brats", preset="short", out=str(tmp_path))


@pytest.mark.slow
def test_a_run_can_train_with_ddp_under_torchrun(tmp_path):
    """--processes 2: the run's training is torchrun + multi_gpu_train.json (gloo on CPU); the 8 training cases of
    fold 0 are split between the ranks (2 steps of batch 2 per epoch instead of 4), and evaluation follows."""
    full_vs_pocket.run(task="nfbs", archs="unet", variants="pocket", folds=1, processes=2, out=str(tmp_path),
                       cases=10, size=32, **{**TINY, "epochs": 1, "val_interval": 1})
    run_dir = tmp_path / "runs" / "unet-pocket" / "fold0"
    log = (run_dir / "log.txt").read_text()
    assert "epoch 1/1, loss" in log
    assert assert_tensorboard_tags(run_dir / "eval", epochs=1, val_interval=1)["train_loss"] == [1, 2]  # 2 steps
    assert json.loads((run_dir / "train_overrides.json").read_text())["fold"] == 0
    scored = _csv(run_dir / "eval" / "val_mean_dice_raw.csv")
    assert (run_dir / "models" / "model.pt").is_file() and len(scored) == 2
    assert all(0 <= float(r["mean"]) <= 1 for r in scored)
