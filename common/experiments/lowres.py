"""Re-test the low-resolution paper's claim on look-alike prostate data, through the prostate bundle's configs.

Claim (Ostrowski & Shafique, Table II): at 16x16 and 32x32 inputs, ELU-Net + up-scaling head + multi-scale loss
(trained against a 256x256 ground truth) beats plain ELU-Net (trained against the ground truth down-sized to
the input, its prediction up-sampled). This command generates look-alike MSD Task05 data, trains both variants
with the same budget, data, fold and seed at each input size, scores them at the original resolution of every
validation volume (3D Dice and Jaccard of the prostate per case) and prints a Markdown table.

Usage::

    pocket experiment lowres --out /tmp/lowres --quick       # the CPU budget of the model card
    pocket experiment lowres --out /tmp/lowres                # full budget (GPU; 5 folds)
    pocket experiment lowres --out /tmp/lowres --tiny         # seconds: correctness only
    pocket experiment lowres --out /tmp/lowres --quick --epochs 40 --sizes "[16]"

Every run validates once, after its last epoch, and that final model is the one scored: no checkpoint is
selected on the validation cases. The table, ``results.md`` and ``results.json`` go to ``OUT``; each run's
bundle folder (weights, per-case CSVs of ``evaluate.json``) stays under ``OUT/runs``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigWorkflow

from common import BUNDLES_DIR
from common.datasets import prostate
from common.errors import InvalidInputError
from common.networks import count_parameters

__all__ = ["BUDGETS", "BUNDLE_DIR", "format_table", "make_data", "run", "run_variant", "run_workflow"]

BUNDLE_DIR = BUNDLES_DIR / "prostate_mri_segmentation"
VARIANTS = ("head", "plain")

# data: look-alike cases / their slice side; training: bundle overrides. image_size 320 keeps the paper's
# ground truth (256 for 16/32 inputs) even though look-alike slices are smaller than the real 320x320.
BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": {"cases": 5, "data_size": 32, "folds": [0], "image_size": 64, "features": 4, "epochs": 1,
             "batch_size": 2, "num_samples": 2, "learning_rate": 0.01},
    "quick": {"cases": 20, "data_size": 128, "folds": [0], "image_size": 320, "features": 16, "epochs": 40,
              "batch_size": 4, "num_samples": 8, "learning_rate": 0.003},
    "full": {"cases": 32, "data_size": 128, "folds": [0, 1, 2, 3, 4], "image_size": 320, "features": 16,
             "epochs": 200, "batch_size": 4, "num_samples": 8, "learning_rate": 0.001},
}
DATA_KEYS = ("cases", "data_size", "folds")


def make_data(out: str | Path, cases: int, seed: int, size: int) -> tuple[str, str]:
    """Look-alike ``Task05_Prostate`` under ``OUT/data`` (re-used when already written with the same settings)
    and its 5-fold data list; returns ``(dataset_dir, datalist)``."""
    data_dir = Path(out) / "data"
    stamp = data_dir / "lookalike.json"
    wanted = {"cases": int(cases), "seed": int(seed), "size": int(size)}
    dataset_dir = data_dir / "Task05_Prostate"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == wanted and (dataset_dir / "dataset.json").is_file()):
        dataset_dir = Path(prostate.write_lookalike(str(data_dir), cases=cases, seed=seed, size=size))
        stamp.write_text(json.dumps(wanted))
    datalist = data_dir / "msd_prostate.json"
    prostate.build_datalist(str(dataset_dir), out=str(datalist))
    return str(dataset_dir), str(datalist)


def run_workflow(bundle_dir: Path, configs: Sequence[str], workflow_type: str, verbose: bool,
                 **override: Any) -> ConfigWorkflow:
    """Initialize, run and finalize ``configs`` of ``bundle_dir`` (quiet unless ``verbose``); the workflow."""
    cfg = bundle_dir / "configs"
    files = [str(cfg / c) for c in configs]
    if not verbose:  # keep the command's output to one line per run and the table
        override.update({"train#dataset#progress": False, "validate#dataset#progress": False})
    # MONAI's StatsHandler logs epochs at INFO through its own stdout handler, whatever the logging set-up
    previous = logging.root.manager.disable
    if not verbose:
        logging.disable(logging.WARNING)  # only while reading the configs: "logging file is set to False"
    try:
        wf = ConfigWorkflow(
            config_file=files if len(files) > 1 else files[0],
            meta_file=str(cfg / "metadata.json"),
            logging_file=str(cfg / "logging.conf") if verbose else False,
            workflow_type=workflow_type,
            **override,
        )
        if not verbose:
            logging.disable(logging.INFO)
        wf.initialize()
        wf.run()
        wf.finalize()
    finally:
        logging.disable(previous)
    return wf


def run_variant(
    root: str | Path,
    dataset_dir: str,
    datalist: str,
    fold: int,
    input_size: int,
    head: bool,
    train: dict[str, Any],
    seed: int = 0,
    verbose: bool = False,
) -> dict[str, Any]:
    """Train one variant from scratch in bundle folder ``root``, then run ``evaluate.json`` on its final model.

    Returns per-case Dice/Jaccard (validation fold, original resolution), times and the network's size.
    """
    root = Path(root)
    if (root / "models").exists():  # a fresh run: never resume another budget's checkpoint
        for f in (root / "models").iterdir():
            f.unlink()
    common = {"bundle_root": str(root), "dataset_dir": dataset_dir, "datalist": datalist, "fold": fold,
              "input_size": input_size, "head": head, "num_workers": 0, "seed": seed,
              "image_size": train["image_size"], "features": train["features"],
              "cpu_threads": train.get("threads", "auto")}  # the bundle would otherwise pick its own
    t0 = time.perf_counter()
    wf = run_workflow(BUNDLE_DIR, ["train.json"], "train", verbose, **common, epochs=train["epochs"],
                      val_interval=train["epochs"], batch_size=train["batch_size"], num_samples=train["num_samples"],
                      learning_rate=train["learning_rate"], resume=False)
    train_s = time.perf_counter() - t0
    net = wf.parser.get_parsed_content("network_def")
    params = count_parameters(net)
    stages = int(wf.parser.get_parsed_content("head_stages"))
    out_side = input_size * 2**stages
    t0 = time.perf_counter()
    ev = run_workflow(BUNDLE_DIR, ["train.json", "evaluate.json"], "train", verbose, **common)
    eval_s = time.perf_counter() - t0
    state = ev.parser.get_parsed_content("validate#evaluator").state
    dice = state.metric_details["val_mean_dice"].float().mean(dim=1).tolist()
    iou = state.metric_details["val_mean_iou"].float().mean(dim=1).tolist()
    return {"input": input_size, "variant": "head" if head else "plain", "fold": fold, "stages": stages,
            "output": out_side, "params": params, "dice": dice, "iou": iou, "train_s": train_s, "eval_s": eval_s}


def _mean_std(values: Sequence[float]) -> str:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return "n/a"
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return f"{arr.mean():.3f} ± {std:.3f}"


def format_table(results: Sequence[dict[str, Any]], budget: dict[str, Any], seed: int) -> str:
    """Markdown: one row per input size and variant (folds pooled), then the paired head - plain difference."""
    lines = [
        "| input | variant | output | head stages | params | Dice (mean ± std) | Jaccard (mean ± std) | cases "
        "| train time (s) | eval time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    sizes = sorted({r["input"] for r in results})
    for size in sizes:
        for variant in VARIANTS:
            runs = [r for r in results if r["input"] == size and r["variant"] == variant]
            if not runs:
                continue
            dice = [d for r in runs for d in r["dice"]]
            iou = [d for r in runs for d in r["iou"]]
            out = runs[0]["output"]
            name = "ELU-Net + head + multi-scale loss" if variant == "head" else "ELU-Net, upsampled"
            lines.append(
                f"| {size}x{size} | {name} | {out}x{out} | {runs[0]['stages']} | {runs[0]['params']:,}"
                f" | {_mean_std(dice)} | {_mean_std(iou)}"
                f" | {len(dice)} | {sum(r['train_s'] for r in runs):.0f} | {sum(r['eval_s'] for r in runs):.0f} |"
            )
    diffs = []
    for size in sizes:
        pairs = []
        for fold in sorted({r["fold"] for r in results}):
            by = {r["variant"]: r for r in results if r["input"] == size and r["fold"] == fold}
            if set(VARIANTS) <= set(by):
                pairs += [h - p for h, p in zip(by["head"]["dice"], by["plain"]["dice"])]
        if pairs:
            wins = sum(d > 0 for d in pairs)
            diffs.append(f"{size}x{size}: Dice(head) - Dice(plain) = {_mean_std(pairs)} over {len(pairs)} paired "
                         f"cases; head better on {wins} of {len(pairs)}.")
    b = budget
    lines += [
        "",
        *diffs,
        "",
        f"Budget per run: {b['epochs']} epochs x {b['batch_size']} volumes x {b['num_samples']} slices, Adam lr "
        f"{b['learning_rate']}, ELU-Net n={b['features']}, seed {seed}; look-alike data: {b['cases']} cases, slices "
        f"~{b['data_size']}x{b['data_size']}, folds {b['folds']}, image_size {b['image_size']}. Dice/Jaccard: "
        "prostate, 3D per validation volume, on the original slice grid (probabilities resized bilinearly). "
        f"Threads: {torch.get_num_threads()}.",
    ]
    return "\n".join(lines)


def run(
    out: str,
    bundle: str = "prostate",
    quick: bool = False,
    tiny: bool = False,
    sizes: Sequence[int] | None = None,
    seed: int = 0,
    threads: int | None = None,
    verbose: bool = False,
    cases: int | None = None,
    data_size: int | None = None,
    folds: Sequence[int] | None = None,
    image_size: int | None = None,
    features: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    num_samples: int | None = None,
    learning_rate: float | None = None,
    **brats_options: Any,
) -> str:
    """Train the up-scaling head and the plain network per input size; return the Markdown table.

    ``--bundle prostate`` (default): the paper's Table II on look-alike MSD prostate, input sizes 16 and 32. The
    budget is ``full`` (5 folds, 200 epochs), ``--quick`` or ``--tiny`` (see ``BUDGETS``); any of its entries
    (``cases`` ... ``learning_rate``) can be set on its own, e.g. ``--epochs 10 --folds "[0,1]"``.
    ``--bundle brats``: the paper's Table III, per class, through the BraTS bundle's 2D overlay; it also takes
    ``--variants head,plain,unet``, ``--slice_size``, ``--dataset_dir``/``--datalist`` (real data), ``--fold`` and
    ``--engines False`` (see ``common.experiments.lowres_brats.run``). The table is also written to
    ``out/results.md``.
    """
    given = {"cases": cases, "data_size": data_size, "image_size": image_size, "features": features,
             "epochs": epochs, "batch_size": batch_size, "num_samples": num_samples, "learning_rate": learning_rate}
    if bundle == "brats":
        from common.experiments import lowres_brats

        if image_size is not None or folds is not None:
            raise InvalidInputError("--bundle brats takes --slice_size and --fold, not --image_size or --folds.")
        del given["image_size"]
        return lowres_brats.run(out, quick=quick, tiny=tiny, sizes=sizes, seed=seed, threads=threads,
                                verbose=verbose, **given, **brats_options)
    if bundle != "prostate":
        raise InvalidInputError(f"bundle must be prostate or brats, got {bundle!r}.")
    if brats_options:
        raise InvalidInputError(f"unknown option(s) for the prostate bundle: {', '.join(sorted(brats_options))}.")
    given["folds"] = folds
    sizes = (16, 32) if sizes is None else sizes
    if quick and tiny:
        raise InvalidInputError("choose at most one of --quick and --tiny.")
    budget = dict(BUDGETS["tiny" if tiny else "quick" if quick else "full"])
    budget.update({k: v for k, v in given.items() if v is not None})
    budget["folds"] = [int(f) for f in (budget["folds"] if isinstance(budget["folds"], (list, tuple))
                                        else [budget["folds"]])]
    if threads:
        torch.set_num_threads(int(threads))
        budget["threads"] = int(threads)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset_dir, datalist = make_data(out_dir, budget["cases"], seed, budget["data_size"])
    results = []
    for size in [int(s) for s in (sizes if isinstance(sizes, (list, tuple)) else [sizes])]:
        if size % 16:
            raise InvalidInputError(f"input size {size} is not a multiple of 16 (ELU-Net pools 4 times).")
        for fold in budget["folds"]:
            for variant in VARIANTS:
                root = out_dir / "runs" / f"fold{fold}" / f"{size}_{variant}"
                r = run_variant(root, dataset_dir, datalist, fold, size, variant == "head", budget, seed, verbose)
                results.append(r)
                print(f"input {size} {variant} fold {fold}: Dice {_mean_std(r['dice'])}, "
                      f"train {r['train_s']:.0f} s", flush=True)
    table = format_table(results, budget, seed)
    (out_dir / "results.md").write_text(table + "\n")
    (out_dir / "results.json").write_text(json.dumps({"budget": budget, "seed": seed, "results": results}, indent=1))
    return table
