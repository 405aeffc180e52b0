"""How much training data full and pocket networks need: scores against the fraction of the training set (Fig. 5).

Celaya et al., "PocketNet: A Smaller Neural Network for Medical Image Analysis" (IEEE TMI 2022), Fig. 5: full and
pocket networks trained on growing fractions of the training data, with the same validation and test cases for
every fraction and no augmentation, and box plots of the test scores per fraction. Here the data list's folds fix
the split: fold 0 is the test set, fold 1 the validation set (model selection), folds 2-4 the training pool, of
which each fraction takes the first ``round(fraction * pool)`` cases of one seeded shuffle (so the fractions are
nested). Each (variant, fraction) run trains with the bundle's ``train.json`` on its own data list (augmentation
reduced to the patch sampling) and is scored on the test cases by ``evaluate.json``::

    pocket experiment saturation --task nfbs --dataset_dir /data/NFBS_Dataset --datalist data_lists/nfbs.json

A fraction that leaves no training case is skipped with a sentence. Written to ``out``: ``split.json`` (the case
ids of test, validation and every fraction's training set), ``report.md``, ``report.csv``, ``cases.csv`` and
``saturation.png`` (box plots of Dice, HD95 and ASD per fraction, full beside pocket).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.data.datalists import save_datalist
from common.errors import InvalidInputError
from common.experiments.casewise import METRICS, describe, per_case, write_csv
from common.experiments.full_vs_pocket import VARIANTS
from common.experiments.inputs import TASKS, csv_list, experiment_data
from common.experiments.runs import Run, run_all

__all__ = ["FRACTIONS", "NO_AUGMENTATION", "run", "split"]

FRACTIONS = (0.015, 0.05, 0.10, 0.25, 0.50, 1.0)
#: train.json's random transforms without augmentation: only padding and patch sampling
NO_AUGMENTATION = {"train#random_transforms": ["@train#augmentation#pad", "@train#augmentation#crop"]}


def split(datalist: str, fractions: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """Test (fold 0), validation (fold 1) and the nested training subsets of the pool (folds 2-4), as entries."""
    entries = json.loads(Path(datalist).read_text())["training"]
    test = [e for e in entries if e["fold"] == 0]
    val = [e for e in entries if e["fold"] == 1]
    pool = [e for e in entries if e["fold"] >= 2]
    if not test or not val:
        raise InvalidInputError(f"{datalist}: folds 0 (test) and 1 (validation) must both hold cases.")
    order = np.random.default_rng(seed).permutation(len(pool))
    subsets, skipped = {}, []
    for f in fractions:
        if not 0 < f <= 1:
            raise InvalidInputError(f"a fraction must lie in (0, 1], got {f}.")
        n = int(round(f * len(pool)))
        if n < 1:
            skipped.append(f"{f:.1%} of {len(pool)} training cases is no case: fraction {f:g} is skipped.")
            continue
        subsets[f] = [pool[i] for i in order[:n]]
    return {"test": test, "val": val, "train": subsets, "skipped": skipped}


def _case_id(entry: dict[str, Any]) -> str:
    image = entry["image"]
    return image if isinstance(image, str) else image[0]


def run(
    task: str = "nfbs",
    arch: str = "unet",
    variants: str | Sequence[str] = "full,pocket",
    fractions: str | Sequence[float] = ",".join(map(str, FRACTIONS)),
    out: str = "/tmp/pocketnet_saturation",
    dataset_dir: str | None = None,
    datalist: str | None = None,
    cases: int = 40,
    size: int = 48,
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    threads: int = 1,
    seed: int = 0,
    **override: Any,
) -> str:
    """Train ``arch`` full and pocket on every fraction, score on the fixed test cases; return the Markdown report.

    Arguments as ``pocket experiment table1``; ``fractions`` is a comma-separated list of shares of the pool.
    """
    if task not in TASKS:
        raise InvalidInputError(f"task must be one of {', '.join(TASKS)}, got {task!r}.")
    variant_list = csv_list(variants)
    if any(v not in VARIANTS for v in variant_list):
        raise InvalidInputError(f"variants must be full and/or pocket, got {variants!r}.")
    fraction_list = [float(f) for f in (csv_list(fractions) if isinstance(fractions, str) else fractions)]
    work = Path(out)
    work.mkdir(parents=True, exist_ok=True)
    dataset_dir, datalist = experiment_data(task, work, dataset_dir, datalist, cases, size, seed)
    parts = split(str(datalist), fraction_list, seed)
    for sentence in parts["skipped"]:
        print(f"[saturation] {sentence}", flush=True)
    lists = work / "datalists"
    # scoring list: the test cases are fold 0; the validation cases stand in as the (unused) training fold
    test_list = save_datalist({"num_folds": 2, "training": [{**e, "fold": 0} for e in parts["test"]] +
                               [{**e, "fold": 1} for e in parts["val"]]}, lists / "test.json")
    runs = []
    for f, subset in parts["train"].items():
        train_list = save_datalist({"num_folds": 2, "training": [{**e, "fold": 0} for e in parts["val"]] +
                                    [{**e, "fold": 1} for e in subset]}, lists / f"train_{f:g}.json")
        for variant in variant_list:
            runs.append(Run(
                name=f"{arch}-{variant}/fraction{f:g}", bundle=TASKS[task], train=["train.json"],
                evaluate=["train.json", "evaluate.json"],
                overrides={"dataset_dir": str(dataset_dir), "fold": 0, "arch": arch, "pocket": variant == "pocket",
                           "cpu_threads": threads, "seed": seed, **NO_AUGMENTATION, **override},
                train_overrides={"datalist": str(train_list)}, evaluate_overrides={"datalist": str(test_list)},
                cpus=threads))
    (work / "split.json").write_text(json.dumps({
        "test": [_case_id(e) for e in parts["test"]], "validation": [_case_id(e) for e in parts["val"]],
        "train": {f"{f:g}": [_case_id(e) for e in s] for f, s in parts["train"].items()},
        "skipped": parts["skipped"]}, indent=2))
    dirs = run_all(runs, work, name="saturation", jobs=jobs, executor=executor, address=address)
    scores: dict[tuple[str, float], dict[str, dict[str, float]]] = {}
    rows, case_rows = [], []
    md = [f"# {task} {arch}: test scores against the share of the training pool", "",
          "| fraction | training cases | variant | test cases | " +
          " | ".join(f"{t} mean (std) | {t} median" for t in METRICS.values()) + " |",
          "|---:|---:|---|---:|" + "---:|---:|" * len(METRICS)]
    for f, subset in parts["train"].items():
        for variant in variant_list:
            d = dirs[f"{arch}-{variant}/fraction{f:g}"]
            values = {m: per_case(d / "eval", m) for m in METRICS}
            scores[(variant, f)] = values
            s = {m: describe(list(values[m].values())) for m in METRICS}
            for m in METRICS:
                rows.append({"fraction": f, "training_cases": len(subset), "variant": variant,
                             "metric": METRICS[m], **s[m]})
                case_rows += [{"fraction": f, "variant": variant, "case": c, "metric": METRICS[m], "value": v}
                              for c, v in values[m].items()]
            md.append(f"| {f:g} | {len(subset)} | {variant} | {s['val_mean_dice']['n']} | " + " | ".join(
                f"{s[m]['mean']:.3f} ({s[m]['std']:.3f}) | {s[m]['median']:.3f}" for m in METRICS) + " |")
    md += ["", f"Test: fold 0 ({len(parts['test'])} cases), validation: fold 1 ({len(parts['val'])} cases), the "
           "same for every fraction (`split.json`); no augmentation; distances in mm on each label's own grid.",
           *(f"- {s}" for s in parts["skipped"])]
    text = "\n".join(md) + "\n"
    (work / "report.md").write_text(text)
    write_csv(work / "report.csv", rows)
    write_csv(work / "cases.csv", case_rows)
    _plot(work / "saturation.png", scores, list(parts["train"]), variant_list, f"{task} {arch}")
    return text


def _plot(path: Path, scores: dict, fractions: list[float], variants: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.5 * len(METRICS), 3.8))
    width = 0.8 / len(variants)
    colours = {"full": "#fdae6b", "pocket": "#9ecae1"}
    for ax, (m, t) in zip(axes, METRICS.items()):
        for j, variant in enumerate(variants):
            data = [list(scores[(variant, f)][m].values()) for f in fractions]
            pos = np.arange(len(fractions)) + (j - (len(variants) - 1) / 2) * width
            box = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True)
            for patch in box["boxes"]:
                patch.set_facecolor(colours[variant])
        ax.set_xticks(range(len(fractions)), [f"{100 * f:g}%" for f in fractions])
        ax.set_xlabel("share of the training pool")
        ax.set_title(t)
    axes[0].legend([plt.Rectangle((0, 0), 1, 1, color=colours[v]) for v in variants], variants)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
