"""The low-resolution paper's BraTS experiment (Ostrowski & Shafique, Table III) through the BraTS bundle's 2D overlay.

Axial slices of the four MR channels at 256x256 (``slice_size``), fed to the network at 256/128/64/32/16 pixels,
scored per class (necrotic / non-enhancing core, edema, enhancing tumour) at 256x256 with Jaccard and Dice pooled
over every validation voxel, as the paper reports them, and averaged per volume beside. Rows: network x input
size, where the networks are ELU-Net + up-scaling head + multi-scale loss (``head``), plain ELU-Net whose
prediction is up-sampled (``plain``) and a plain U-Net (``unet``); each row also gives parameters, GMac of one
slice and slices/s of the bundle's evaluation with torch and with the fastest engine ``pocket engines`` chose.

Usage::

    pocket experiment lowres --bundle brats --out /tmp/lowres_brats --quick     # look-alike data, CPU budget
    pocket experiment lowres --bundle brats --out /tmp/lowres_brats --dataset_dir /data/MICCAI_BraTS2020_TrainingData

The split is by patient (fold 0 of the committed 5-fold list, about 80/20); the paper split slices 85/15, which
lets slices of one patient sit on both sides. Every run validates once, after its last epoch, and that final
model is scored: no checkpoint is selected on the validation cases.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import BUNDLES_DIR, REPO_ROOT
from common.errors import InvalidInputError
from common.experiments.lowres import run_workflow
from common.networks import count_parameters

__all__ = ["BUDGETS", "BUNDLE_DIR", "CLASSES", "VARIANTS", "format_table", "make_data", "run", "run_variant"]

BUNDLE_DIR = BUNDLES_DIR / "brats_tumor_mri_segmentation"
TRAIN = ["train.json", "train_lowres_2d.json"]
EVALUATE = [*TRAIN, "evaluate_lowres_2d.json"]
CLASSES = ("NCR/NET (1)", "ED (2)", "ET (4)")
VARIANTS = {
    "unet": "U-Net, upsampled",
    "plain": "ELU-Net, upsampled",
    "head": "ELU-Net + head + multi-scale loss",
}
# data: look-alike cases and their side; training: bundle overrides
BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": {"cases": 6, "data_size": 32, "slice_size": 32, "features": 4, "epochs": 1, "batch_size": 2,
             "num_samples": 2, "learning_rate": 0.01},
    "quick": {"cases": 16, "data_size": 96, "slice_size": 128, "features": 16, "epochs": 30, "batch_size": 2,
              "num_samples": 8, "learning_rate": 0.003},
    "full": {"cases": 32, "data_size": 128, "slice_size": 256, "features": 16, "epochs": 100, "batch_size": 4,
             "num_samples": 8, "learning_rate": 0.001},
}


def make_data(out: str | Path, cases: int, seed: int, size: int) -> tuple[str, str]:
    """Look-alike BraTS 2020 under ``OUT/data`` (re-used when written with the same settings) and the committed
    data list cut down to its cases (their committed folds); returns ``(dataset_dir, datalist)``."""
    from common.datasets import brats

    data_dir = Path(out) / "data"
    stamp = data_dir / "lookalike.json"
    wanted = {"cases": int(cases), "seed": int(seed), "size": int(size)}
    dataset_dir = data_dir / "MICCAI_BraTS2020_TrainingData"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == wanted):
        dataset_dir = Path(brats.write_lookalike(str(data_dir), cases=cases, seed=seed, size=size))
        stamp.write_text(json.dumps(wanted))
    datalist = brats.lookalike_datalist(str(dataset_dir), str(data_dir / "brats2020_lookalike.json"))
    return str(dataset_dir), datalist


def _read_per_class(eval_dir: Path) -> list[dict[str, Any]]:
    with open(eval_dir / "per_class.csv", newline="") as f:
        return [{k: (v if k == "class" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def _slices(dataset_dir: str, datalist: str, fold: int) -> int:
    """Axial slices of the validation volumes (what one evaluation pass feeds the network)."""
    import nibabel as nib

    from common.data.datalists import load_fold

    return int(sum(nib.load(e["label"]).shape[2] for e in load_fold(datalist, dataset_dir, fold, "val")))


def _engine_speed(root: Path, dataset_dir: str, datalist: str, fold: int, common: dict[str, Any],
                  slices: int) -> dict[str, Any]:
    """``pocket engines`` on the run: slices/s of the evaluation with torch and with the chosen engine."""
    from common.engines.choose import engines
    from common.engines.record import read_record

    trained_with = {k: common[k] for k in ("arch", "init_filters", "slice_size", "input_size", "head")}
    engines(str(BUNDLE_DIR), dataset_dir, datalist, fold, variant="lowres_2d", bundle_root=str(root),
            calibration_cases=4, calibration_samples=32, cpu_threads=common["cpu_threads"], **trained_with)
    record = read_record(root / "models" / "lowres_2d")
    scores = record["scores"]
    cases = record["cases_scored"]
    return {"engine": record["chosen"],
            "torch_slices_s": slices / (scores["torch"]["seconds_per_case"] * cases),
            "engine_slices_s": slices / (scores[record["chosen"]]["seconds_per_case"] * cases),
            "engine_dice": scores[record["chosen"]]["metric"], "torch_dice": scores["torch"]["metric"]}


def run_variant(root: str | Path, dataset_dir: str, datalist: str, fold: int, input_size: int, variant: str,
                budget: dict[str, Any], seed: int = 0, verbose: bool = False,
                measure_engines: bool = True) -> dict[str, Any]:
    """Train one network x input size from scratch in bundle folder ``root``, evaluate its final model per class."""
    if variant not in VARIANTS:
        raise InvalidInputError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}.")
    root = Path(root)
    models = root / "models" / "lowres_2d"
    if models.exists():  # a fresh run: never resume another budget's checkpoint
        for f in models.iterdir():
            if f.is_file():
                f.unlink()
    common = {"bundle_root": str(root), "dataset_dir": dataset_dir, "datalist": datalist, "fold": fold,
              "input_size": input_size, "head": variant == "head", "arch": "unet" if variant == "unet" else "elunet",
              "num_workers": 0, "seed": seed, "slice_size": budget["slice_size"],
              "init_filters": budget["features"], "cpu_threads": budget.get("threads", "auto")}
    t0 = time.perf_counter()
    wf = run_workflow(BUNDLE_DIR, TRAIN, "train", verbose, **common, epochs=budget["epochs"],
                      val_interval=budget["epochs"], batch_size=budget["batch_size"],
                      num_samples=budget["num_samples"], learning_rate=budget["learning_rate"], resume=False)
    train_s = time.perf_counter() - t0
    from common.benchmarks.complexity import count_macs

    net = wf.parser.get_parsed_content("network_def")
    params = count_parameters(net)
    gmac = count_macs(net, (4, input_size, input_size)) / 1e9
    out_side = int(net.eval()(torch.zeros(1, 4, input_size, input_size)).shape[-1])
    t0 = time.perf_counter()
    run_workflow(BUNDLE_DIR, EVALUATE, "train", verbose, **common)
    eval_s = time.perf_counter() - t0
    result = {"input": input_size, "variant": variant, "fold": fold, "output": out_side, "params": params,
              "gmac": gmac, "per_class": _read_per_class(root / "eval" / "lowres_2d"), "train_s": train_s,
              "eval_s": eval_s}
    if measure_engines:
        result.update(_engine_speed(root, dataset_dir, datalist, fold, common, _slices(dataset_dir, datalist, fold)))
    return result


def format_table(results: Sequence[dict[str, Any]], budget: dict[str, Any], seed: int, data: str) -> str:
    """Markdown in the form of the paper's Table III: per-class Jaccard and Dice (pooled), then their means."""
    short = ("NCR/NET", "ED", "ET")
    head = ["input", "network", "output", "params", "GMac/slice"]
    head += [f"J {c}" for c in short] + ["J mean"] + [f"D {c}" for c in short] + ["D mean"]
    head += ["D mean per volume", "slices/s torch", "slices/s fastest (engine)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for size in sorted({r["input"] for r in results}, reverse=True):
        for variant in VARIANTS:
            for r in (r for r in results if r["input"] == size and r["variant"] == variant):
                pc = r["per_class"]
                jac = [c["pooled_jaccard"] for c in pc]
                dice = [c["pooled_dice"] for c in pc]
                speed = ["–", "–"]
                if "torch_slices_s" in r:
                    speed = [f"{r['torch_slices_s']:.0f}", f"{r['engine_slices_s']:.0f} ({r['engine']})"]
                lines.append(
                    f"| {size}x{size} | {VARIANTS[variant]} | {r['output']}x{r['output']} | {r['params']:,} "
                    f"| {r['gmac']:.4g} | " + " | ".join(f"{v:.3f}" for v in [*jac, np.mean(jac), *dice,
                                                                             np.mean(dice)])
                    + f" | {np.mean([c['volume_dice'] for c in pc]):.3f} | " + " | ".join(speed) + " |")
    b = budget
    lines += ["", f"Per run: {b['epochs']} epochs x {b['batch_size']} volumes x {b['num_samples']} slices (2 of 3 "
              f"with tumour), Adam lr {b['learning_rate']}, {b['features']} initial filters, seed {seed}; data: "
              f"{data}; slices padded/cropped to {b['slice_size']}x{b['slice_size']}, scored at that size. J/D: "
              "Jaccard/Dice pooled over all validation voxels; per volume: mean over volumes and classes (both "
              f"empty: 1). Threads: {torch.get_num_threads()}."]
    return "\n".join(lines)


def run(out: str, quick: bool = False, tiny: bool = False, sizes: Sequence[int] | None = None,
        variants: Sequence[str] | str = ("head", "plain"), seed: int = 0, threads: int | None = None,
        verbose: bool = False, dataset_dir: str | None = None, datalist: str | None = None, fold: int = 0,
        engines: bool = True, **given: Any) -> str:
    """Train every network x input size, score each per class; return the Table III-form Markdown.

    Args:
        out: results (``results.md``, ``results.json``), look-alike data and one bundle folder per run.
        quick: the CPU budget (16 look-alike cases of ~96 voxels, 128x128 slices, inputs 16/32/64, 30 epochs).
        tiny: seconds, correctness only.
        sizes: input sizes (default: the budget's; the full budget runs the paper's 256..16).
        variants: comma-separated ``head``, ``plain``, ``unet``.
        seed: of the data and the trainings.
        threads: torch threads.
        verbose: the bundles' own logs.
        dataset_dir: the real BraTS 2020 training folder; without it, look-alike data in ``OUT/data``.
        datalist: its data list (default: the committed one).
        fold: the validation fold.
        engines: also run ``pocket engines`` on every run (slices/s with torch and the fastest engine).
        given: budget entries set on their own (``cases``, ``data_size``, ``slice_size``, ``features``,
            ``epochs``, ``batch_size``, ``num_samples``, ``learning_rate``).
    """
    if quick and tiny:
        raise InvalidInputError("choose at most one of --quick and --tiny.")
    budget = dict(BUDGETS["tiny" if tiny else "quick" if quick else "full"])
    unknown = sorted(set(given) - set(budget))
    if unknown:
        raise InvalidInputError(f"unknown option(s) {', '.join(unknown)}; budget entries: {', '.join(budget)}.")
    budget.update({k: v for k, v in given.items() if v is not None})
    if sizes is None:
        sizes = {"tiny": (16,), "quick": (16, 32, 64)}.get("tiny" if tiny else "quick" if quick else "",
                                                          (256, 128, 64, 32, 16))
    sizes = [int(s) for s in (sizes if isinstance(sizes, (list, tuple)) else [sizes])]
    variants = [v.strip() for v in variants.split(",")] if isinstance(variants, str) else list(variants)
    for size in sizes:
        if size % 16 or size > budget["slice_size"]:
            raise InvalidInputError(f"input size {size} must be a multiple of 16 (4 poolings) and at most "
                                    f"slice_size {budget['slice_size']}.")
    if threads:
        torch.set_num_threads(int(threads))
        budget["threads"] = int(threads)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if dataset_dir is None:
        dataset_dir, datalist = make_data(out_dir, budget["cases"], seed, budget["data_size"])
        data = f"look-alike BraTS, {budget['cases']} cases of ~{budget['data_size']} voxels a side"
    else:
        datalist = datalist or str(REPO_ROOT / "data_lists" / "brats2020.json")
        data = dataset_dir
    results = []
    for size in sizes:
        for variant in variants:
            root = out_dir / "runs" / f"fold{fold}" / f"{size}_{variant}"
            r = run_variant(root, dataset_dir, datalist, fold, size, variant, budget, seed, verbose, engines)
            results.append(r)
            print(f"input {size} {variant}: pooled Dice " + ", ".join(
                f"{c['class']} {c['pooled_dice']:.3f}" for c in r["per_class"]) + f"; train {r['train_s']:.0f} s",
                flush=True)
    table = format_table(results, budget, seed, data)
    (out_dir / "results.md").write_text(table + "\n")
    (out_dir / "results.json").write_text(json.dumps({"budget": budget, "seed": seed, "results": results},
                                                     indent=1))
    return table
