"""Whole-volume vs slab-wise vs cascade on look-alike data, through the bundles' own configs.

Wehen, "A Comparative Study of U-Net, Patch-wise U-Net, and Patch-wise U-Net Cascade" (bachelor thesis, 2023),
the slab-wise cascade study, compares a whole-volume 3D U-Net, a slab-wise U-Net (16-voxel slabs) and the
two-stage cascade.
This command trains and evaluates all three with the LiTS or BraTS bundle exactly as a user would
(``train.json`` + the ``train_slab`` / ``train_cascade_stage{1,2}`` overlays, then ``evaluate.json`` + the
``evaluate_slab`` / ``evaluate_cascade`` overlays), on freshly generated look-alike cases, and prints the
validation Dice of each with the same budget (epochs) per model::

    pocket experiment cascade --task lits --out /tmp/cascade_lits
    pocket experiment cascade --task brats --out /tmp/cascade_brats --epochs 20

Look-alike volumes are small (``--size`` voxels a side), so the "whole-volume" model is ``train.json`` with a
``--patch`` (64^3) that covers the whole resampled look-alike volume. The cascade factor defaults to 0.5 here: the
bundles' 0.2 / 0.3 would leave stage 1 a grid of a few voxels. Stage 2's own validation Dice (with
ground-truth guidance) is printed too: it is the ceiling the cascade reaches with a perfect stage 1.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from common import REPO_ROOT as ROOT
from common.data.datalists import assign_folds, save_datalist
from common.datasets import brats, lits
from common.errors import InvalidInputError
from common.networks import count_parameters

BUNDLES = {"lits": "lits_liver_ct_segmentation", "brats": "brats_tumor_mri_segmentation"}

# (name, train overlays, evaluate overlays or None when the model is scored only by its own validation)
METHODS = [
    ("whole volume", ["train.json"], ["train.json", "evaluate.json"]),
    ("slab-wise", ["train.json", "train_slab.json"], ["train.json", "evaluate.json", "evaluate_slab.json"]),
    ("cascade stage 1 (low resolution)", ["train.json", "train_cascade_stage1.json"], None),
    ("cascade stage 2 (ground-truth guidance)", ["train.json", "train_cascade_stage2.json"], None),
    ("cascade", None, ["train.json", "evaluate.json", "evaluate_cascade.json"]),
]
EVAL_DIRS = {"whole volume": "eval", "slab-wise": "eval/slab", "cascade": "eval/cascade"}


def run_configs(configs_dir: Path, files: list[str], workflow_type: str, bundle_root: Path, **override: Any) -> Any:
    """Run a bundle workflow from a list of overlaid config files (as ``monai.bundle run`` does)."""
    wf = ConfigWorkflow(
        config_file=[str(configs_dir / f) for f in files],
        meta_file=str(configs_dir / "metadata.json"),
        logging_file=str(configs_dir / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(bundle_root),
        **override,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def make_data(task: str, out: Path, cases: int, size: int, seed: int) -> dict[str, str]:
    """Look-alike cases in the real layout and a 5-fold data list for them (fold 0 is validation)."""
    if task == "lits":
        ds = lits.write_lookalike(str(out / "LiTS"), cases=cases, seed=seed, size=size)
        entries = [{"image": f"volume-{n}.nii", "label": f"segmentation-{n}.nii"} for n in range(cases)]
        labels = {"0": "background", "1": "liver", "2": "tumour"}
    elif task == "brats":
        ids = list(range(1, cases + 1))
        ds = brats.write_lookalike(str(out / "brats"), seed=seed, size=size, ids=ids)
        mods = ("t1", "t1ce", "t2", "flair")
        entries = [
            {"image": [f"BraTS20_Training_{n:03d}/BraTS20_Training_{n:03d}_{m}.nii" for m in mods],
             "label": f"BraTS20_Training_{n:03d}/BraTS20_Training_{n:03d}_seg.nii"}
            for n in ids
        ]
        labels = {"0": "background", "1": "necrotic/non-enhancing", "2": "oedema", "4": "enhancing"}
    else:
        raise InvalidInputError(f"task must be one of {sorted(BUNDLES)}, got {task!r}.")
    folds = assign_folds(range(len(entries)))
    for i, e in enumerate(entries):
        e["fold"] = folds[i]
    datalist = {"name": f"{task} look-alike", "labels": labels, "num_folds": 5, "training": entries, "testing": []}
    return {"dataset_dir": ds, "datalist": str(save_datalist(datalist, out / f"{task}_lookalike.json"))}


def _summary(path: Path) -> dict[str, float]:
    with open(path) as f:
        return {row[0]: float(row[1]) for row in csv.reader(f) if len(row) == 2}


def run(
    task: str = "lits",
    out: str = "/tmp/cascade_experiment",
    cases: int = 10,
    size: int = 48,
    epochs: int = 12,
    factor: float = 0.5,
    init_filters: int = 16,
    pocket: bool = True,
    learning_rate: float = 3e-3,
    patch: int = 64,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Train + evaluate whole / slab / cascade with one budget; print a Markdown table; return its rows."""
    if task not in BUNDLES:
        raise InvalidInputError(f"task must be one of {sorted(BUNDLES)}, got {task!r}.")
    work = Path(out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = make_data(task, work, cases, size, seed)
    configs = work / "bundle" / "configs"
    shutil.copytree(ROOT / "bundles" / BUNDLES[task] / "configs", configs)
    if task == "lits":  # the documented first step: measure spacing and intensities on the training fold
        from common.data.fingerprint import fingerprint

        fingerprint(data["datalist"], data["dataset_dir"], fold=0, bundle_dir=str(configs.parent))
    root = work / "run"
    common = dict(data, num_workers=0, cache_rate=1.0, init_filters=init_filters, pocket=pocket, factor=factor,
                  patch_size=[patch] * 3)
    rows = []
    for name, train_files, eval_files in METHODS:
        row: dict[str, Any] = {"method": name}
        if train_files is not None:
            start = time.perf_counter()
            wf = run_configs(configs, train_files, "train", root, **common, epochs=epochs, learning_rate=learning_rate,
                             val_interval=max(1, epochs // 4))
            row["train_s"] = time.perf_counter() - start
            row["params"] = count_parameters(wf.parser.get_parsed_content("network"))
            row["steps"] = wf.parser.get_parsed_content("train#trainer").state.iteration
            row["best_val_dice"] = float(wf.parser.get_parsed_content("validate#evaluator").state.best_metric)
        if eval_files is not None:
            start = time.perf_counter()
            wf = run_configs(configs, eval_files, "train", root, **common)
            row["eval_s"] = time.perf_counter() - start
            row["cases"] = len(wf.parser.get_parsed_content("validate#data"))
            summary = _summary(root / EVAL_DIRS[name] / "metrics.csv")
            row["dice"] = summary["val_mean_dice"]
            row["hd95"] = summary["val_hd95"]
        rows.append(row)
        print(f"[cascade_experiment] {row}", flush=True)
    cascade = next(r for r in rows if r["method"] == "cascade")
    cascade["params"] = sum(r["params"] for r in rows if r["method"].startswith("cascade stage"))
    print(render(rows, task, epochs, factor, cases))
    return rows


def render(rows: list[dict[str, Any]], task: str, epochs: int, factor: float, cases: int) -> str:
    """Markdown table of ``run``'s rows."""

    def f(v: Any, fmt: str) -> str:
        return "–" if v is None else fmt.format(v)

    lines = [
        f"{task} look-alike, {cases} cases (fold 0 validates), {epochs} epochs per model, cascade factor {factor}",
        "",
        "| method | parameters | val Dice (evaluate) | HD95 (mm) | best val Dice in training | steps | train s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {f(r.get('params'), '{:,}')} | {f(r.get('dice'), '{:.3f}')} | "
            f"{f(r.get('hd95'), '{:.2f}')} | {f(r.get('best_val_dice'), '{:.3f}')} | {f(r.get('steps'), '{}')} | "
            f"{f(r.get('train_s'), '{:.0f}')} |"
        )
    return os.linesep.join(lines)
