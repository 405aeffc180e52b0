"""Full against pocket networks by k-fold cross-validation, through a bundle's own configs (PocketNet, Table I).

Celaya et al., "PocketNet: A Smaller Neural Network for Medical Image Analysis" (IEEE TMI 2022), Table I: for
each architecture, the full network (feature maps doubling with depth) and its pocket counterpart (constant
feature maps) are trained and scored on every fold of a 5-fold split; the out-of-fold per-case Dice, Hausdorff 95
and average surface distance are pooled, and pocket is compared with full by a Wilcoxon signed-rank test paired
by case. This command does that with a bundle as a user runs it: every (arch, variant, fold) run is the bundle's
``train.json`` with ``fold=k``, then its ``evaluate.json`` on fold k (metrics on the label's own grid, distances in
mm), each in its own directory (:mod:`common.experiments.runs`: finished runs are skipped, interrupted ones
resumed)::

    pocket experiment table1 --task nfbs --dataset_dir /data/NFBS_Dataset --datalist data_lists/nfbs.json
    pocket experiment table1 --task nfbs --archs unet,resnet --epochs 20 --init_filters 8 --patch_size [32,32,32]

Without ``dataset_dir`` it runs on look-alike cases it writes once under ``out/data``. Written to ``out``:
``report.md`` (the table, each run's budget and seed), ``report.csv`` (one row per arch, variant and metric),
``cases.csv`` (every pooled per-case value), ``boxplots.png`` and, per arch, ``activations_<arch>.png`` (the
per-channel mean activations of :mod:`common.experiments.activations`).

As in the bundles, ``model.pt`` is the checkpoint with the best validation Dice on the fold it is then scored
on: the numbers are cross-validation scores with model selection on the scored fold, as the paper reports them,
not scores of an untouched test set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InvalidInputError
from common.experiments.casewise import METRICS, describe, per_case, write_csv
from common.experiments.inputs import TASKS, csv_list, experiment_data, fold_overrides
from common.experiments.runs import EXECUTORS, Run, run_all
from common.experiments.statistics import stars, wilcoxon_paired

__all__ = ["PRESETS", "build_report", "run"]

VARIANTS = ("full", "pocket")
#: preset -> task -> overlays after train.json (training and evaluation), and the archs the preset defines
PRESETS = {"short": {"nfbs": ["train_short.json"], "lits": ["train_short_2d.json"]}}
PRESET_ARCHS = {"short": ("unet", "resnet", "densenet")}
def _fmt(x: float, digits: int) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _p_cell(test) -> str:
    return "–" if test is None else f"{_fmt(test.p, 3)} {stars(test.p)}"


def build_report(out: Path, task: str, archs: list[str], variants: list[str], folds: list[int],
                 run_dirs: dict[str, Path], title: str, name_of: Any = None) -> str:
    """Pool each (arch, variant)'s out-of-fold cases; write report.md/.csv, cases.csv and boxplots.png."""
    name_of = name_of or (lambda arch, variant, fold: f"{arch}-{variant}/fold{fold}")
    pooled: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    runs_info, case_rows = [], []
    for arch in archs:
        for variant in variants:
            values: dict[str, dict[str, float]] = {m: {} for m in METRICS}
            for fold in folds:
                name = name_of(arch, variant, fold)
                d = run_dirs[name]
                info = json.loads((d / "finished.json").read_text())
                spec = json.loads((d / "run.json").read_text())
                runs_info.append({"run": name, **info, "seed": spec["overrides"].get("seed", 0)})
                fold_values = {m: per_case(d / "eval", m) for m in METRICS}
                for m, cases in fold_values.items():
                    values[m].update(cases)
                for case in fold_values["val_mean_dice"]:
                    case_rows.append({"arch": arch, "variant": variant, "fold": fold, "case": case,
                                      **{m: fold_values[m].get(case, float("nan")) for m in METRICS}})
            pooled[(arch, variant)] = values
    params = {(r["run"].split("/")[0]): r["parameters"] for r in runs_info}
    csv_rows, md = [], []
    header = "| arch | variant | parameters (M) | cases |" + "".join(
        f" {t} mean (std) | {t} median | p |" for t in METRICS.values())
    md += [f"# {title}", "", header, "|---|---|---:|---:|" + "---:|---:|---|" * len(METRICS)]
    for arch in archs:
        for variant in variants:
            values = pooled[(arch, variant)]
            params_m = params[name_of(arch, variant, folds[0]).split("/")[0]] / 1e6
            cells = []
            n_cases = len(values["val_mean_dice"])
            for m in METRICS:
                s = describe(list(values[m].values()))
                test = None
                if variant == "pocket" and "full" in variants:
                    test = wilcoxon_paired(values[m], pooled[(arch, "full")][m])
                digits = 3 if m == "val_mean_dice" else 2
                cells.append(f" {_fmt(s['mean'], digits)} ({_fmt(s['std'], digits)}) | {_fmt(s['median'], digits)} |"
                             f" {_p_cell(test)} |")
                csv_rows.append({"arch": arch, "variant": variant, "parameters": int(params_m * 1e6 + 0.5),
                                 "metric": METRICS[m], "n": s["n"], "mean": s["mean"], "std": s["std"],
                                 "median": s["median"], "p_wilcoxon": "" if test is None else test.p,
                                 "significance": "" if test is None else stars(test.p),
                                 "note": "" if test is None else test.note})
            md.append(f"| {arch} | {variant} | {params_m:.3f} | {n_cases} |" + "".join(cells))
    notes = sorted({f"{r['arch']} {r['metric']}: {r['note']}" for r in csv_rows if r["note"]})
    md += ["", f"Out-of-fold cases of folds {', '.join(map(str, folds))} pooled; std is the sample standard "
           "deviation; p: two-sided Wilcoxon signed-rank test, pocket against full, paired by case "
           "(NS p >= 0.05, * < 0.05, ** < 0.01, *** < 0.001). HD95 and ASD in mm on each label's own grid. "
           "Empty masks follow the collection's rule (both empty: Dice 1, distances 0; one empty: Dice 0, "
           "distances the image diagonal), so every mean is over all the cases counted. model.pt is the "
           "checkpoint with the best validation Dice on the fold it is scored on.", *(f"- {n}" for n in notes),
           "", "## Runs", "", "| run | epochs | seed | parameters | train s | evaluate s | config hash |",
           "|---|---:|---:|---:|---:|---:|---|"]
    md += [f"| {r['run']} | {r['epochs']} | {r['seed']} | {r['parameters']:,} | {r['train_s']:.0f} | "
           f"{r['evaluate_s']:.0f} | {r['hash']} |" for r in runs_info]
    text = "\n".join(md) + "\n"
    (out / "report.md").write_text(text)
    write_csv(out / "report.csv", csv_rows)
    write_csv(out / "cases.csv", case_rows)
    _boxplots(out / "boxplots.png", pooled, archs, variants, title)
    return text


def _boxplots(path: Path, pooled: dict, archs: list[str], variants: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.5 * len(METRICS), 4))
    labels = [f"{a}\n{v}" for a in archs for v in variants]
    for ax, (m, t) in zip(axes, METRICS.items()):
        data = [[x for x in pooled[(a, v)][m].values() if np.isfinite(x)] for a in archs for v in variants]
        box = ax.boxplot(data, patch_artist=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7, rotation=45)
        for patch, (_, v) in zip(box["boxes"], [(a, v) for a in archs for v in variants]):
            patch.set_facecolor("#9ecae1" if v == "pocket" else "#fdae6b")
        ax.set_title(t)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run(
    task: str = "nfbs",
    archs: str | Sequence[str] = "unet,resnet,densenet,hrnet,nnunet",
    variants: str | Sequence[str] = "full,pocket",
    folds: int = 5,
    out: str = "/tmp/pocketnet_table1",
    dataset_dir: str | None = None,
    datalist: str | None = None,
    cases: int = 20,
    size: int = 48,
    preset: str | None = None,
    processes: int = 1,
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    threads: int = 1,
    seed: int = 0,
    **override: Any,
) -> str:
    """Train and evaluate every arch x variant x fold with the bundle's configs; return the report (Markdown).

    Args:
        task: ``nfbs``, ``lits`` or ``brats`` (the bundle); ``covidx`` runs the classifier comparison of Table II
            instead (:mod:`common.experiments.classifier_auc`: archs, folds, cases and size do not apply).
        archs: comma-separated architectures (``unet, resnet, densenet, hrnet, nnunet``).
        variants: ``full`` and/or ``pocket``; the p-values need both.
        folds: run folds 0 .. folds-1 of the data list's split.
        out: the experiment's folder; rerunning with it skips finished runs and resumes interrupted ones.
        dataset_dir, datalist: your data and its data list (``pocket datalist``); without them ``cases``
            look-alike cases of ``size`` voxels a side are written once under ``out/data``.
        preset: ``short``: the MICCAI-workshop PocketNet setting (NFBS on 5-slice slabs, ``train_short.json``;
            LiTS as windowed 2D axial slices, ``train_short_2d.json``; U-Net, ResNet and DenseNet only).
        processes: training processes per run; above 1 each training runs under torchrun with the bundle's
            ``multi_gpu_train.json`` (one GPU per process, or gloo on CPU), and a Ray task asks for that many GPUs
            where CUDA is there.
        jobs: runs at a time (local child processes). executor: ``local`` or ``ray`` (``address`` of a running
            cluster, or ``local`` to start a small instance on this machine).
        threads: CPU threads per run (``cpu_threads``, and the CPUs a Ray task asks for).
        seed: the bundles' ``seed``, the same for every run.
        override: further config overrides for every run, e.g. ``--epochs 20 --init_filters 8
            --patch_size [32,32,32] --num_workers 0``.
    """
    if task == "covidx":  # Table II: one classifier per variant, AUC on the test split
        from common.experiments import classifier_auc

        return classifier_auc.run(csv_list(variants), out, dataset_dir, datalist, jobs=jobs, executor=executor,
                                  address=address, threads=threads, seed=seed, **override)
    if task not in TASKS:
        raise InvalidInputError(f"task must be one of {', '.join(TASKS)} or covidx, got {task!r}.")
    if executor not in EXECUTORS:
        raise InvalidInputError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}.")
    arch_list, variant_list = csv_list(archs), csv_list(variants)
    from common.networks import ARCHS

    for a in arch_list:
        if a not in ARCHS:
            raise InvalidInputError(f"unknown arch {a!r}; archs: {', '.join(ARCHS)}.")
    for v in variant_list:
        if v not in VARIANTS:
            raise InvalidInputError(f"variant must be full or pocket, got {v!r}.")
    overlays: list[str] = []
    if preset is not None:
        if preset not in PRESETS or task not in PRESETS[preset]:
            have = ", ".join(f"{p} ({', '.join(t)})" for p, t in PRESETS.items())
            raise InvalidInputError(f"no preset {preset!r} for {task}; presets: {have}.")
        overlays = PRESETS[preset][task]
        wrong = [a for a in arch_list if a not in PRESET_ARCHS[preset]]
        if wrong:
            raise InvalidInputError(f"the {preset} preset defines {', '.join(PRESET_ARCHS[preset])}, not "
                                    f"{', '.join(wrong)}.")
    if not 1 <= folds <= 5:
        raise InvalidInputError(f"folds must be between 1 and 5, got {folds}.")
    work = Path(out)
    work.mkdir(parents=True, exist_ok=True)
    dataset_dir, datalist = experiment_data(task, work, dataset_dir, datalist, cases, size, seed)
    fold_list = list(range(folds))
    per_fold = {k: fold_overrides(task, datalist, dataset_dir, k, overlays) for k in fold_list}
    runs = [
        Run(name=f"{arch}-{variant}/fold{k}", bundle=TASKS[task], train=["train.json", *overlays],
            evaluate=["train.json", *overlays, "evaluate.json"],
            overrides={"dataset_dir": str(dataset_dir), "datalist": str(datalist), "fold": k, "arch": arch,
                       "pocket": variant == "pocket", "cpu_threads": threads, "seed": seed, **per_fold[k],
                       **override},
            cpus=threads * processes, gpus=float(processes) if _cuda() else 0.0, train_processes=processes)
        for arch in arch_list for variant in variant_list for k in fold_list
    ]
    run_dirs = run_all(runs, work, name="table1", jobs=jobs, executor=executor, address=address)
    title = (f"{task}{f' ({preset} preset)' if preset else ''}: full vs pocket, {folds}-fold cross-validation "
             f"({os.path.basename(str(datalist))}, "
             f"{', '.join(f'{k}={v}' for k, v in override.items()) or 'bundle defaults'})")
    text = build_report(work, task, arch_list, variant_list, fold_list, run_dirs, title)
    from common.experiments import activations

    for arch in arch_list:  # Fig. 4 of the paper, from the same runs
        activations.run(str(work), arch, ",".join(variant_list))
    return text
