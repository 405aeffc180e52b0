"""Where doubling stops: the U-Net with feature maps doubling only up to level L (PocketNet, Table IV).

Celaya et al., "PocketNet: A Smaller Neural Network for Medical Image Analysis" (IEEE TMI 2022), Table IV: a 3D
U-Net whose width doubles up to level L and stays constant below it, for L = depth (the full network) down to 0
(the pocket network), trained and scored with the same cross-validation as Table I. Each level is the bundle's
``train.json`` with ``double_until=L`` (and ``pocket`` off), then ``evaluate.json``::

    pocket experiment ablation --task nfbs --dataset_dir /data/NFBS_Dataset --datalist data_lists/nfbs.json
    pocket experiment ablation --task nfbs --params_only     # the parameter count of every level, no training

Written to ``out``: ``report.md``, ``report.csv`` and ``cases.csv`` (pooled out-of-fold per-case values).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.errors import InvalidInputError
from common.experiments.casewise import METRICS, describe, per_case, write_csv
from common.experiments.inputs import TASKS, experiment_data, fold_overrides
from common.experiments.runs import Run, run_all

__all__ = ["level_parameters", "run"]


def _configs(task: str) -> Path:
    from common import REPO_ROOT

    return REPO_ROOT / "bundles" / TASKS[task] / "configs"


def level_parameters(task: str = "nfbs", arch: str = "unet", **override: Any) -> dict[int, int]:
    """``{L: parameters}`` of the bundle's own ``network_def`` with ``double_until=L``, L = depth .. 0."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(_configs(task) / "train.json"))
    for key, value in {"arch": arch, "pocket": False, **override}.items():
        parser[key] = value
    depth = int(parser.get_parsed_content("depth"))
    counts = {}
    for level in range(depth, -1, -1):
        parser["double_until"] = level
        net = parser.get_parsed_content("network_def", instantiate=True, lazy=False)
        counts[level] = sum(p.numel() for p in net.parameters())
    return counts


def run(
    task: str = "nfbs",
    arch: str = "unet",
    folds: int = 5,
    out: str = "/tmp/pocketnet_ablation",
    dataset_dir: str | None = None,
    datalist: str | None = None,
    cases: int = 20,
    size: int = 48,
    params_only: bool = False,
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    threads: int = 1,
    seed: int = 0,
    **override: Any,
) -> str:
    """Train and evaluate ``arch`` at every doubling level x fold; return the Markdown table.

    The arguments are those of ``pocket experiment table1``; ``params_only`` prints the parameter count of every
    level of the bundle's network (with ``override``, e.g. ``--init_filters 32 --patch_size [128,128,128]``)
    without training.
    """
    if task not in TASKS:
        raise InvalidInputError(f"task must be one of {', '.join(TASKS)}, got {task!r}.")
    params = level_parameters(task, arch, **override)
    if params_only:
        lines = [f"{task} {arch}: parameters with doubling up to level L", "", "| L | parameters | (M) |",
                 "|---:|---:|---:|"]
        return "\n".join([*lines, *(f"| {k} | {v:,} | {v / 1e6:.2f} |" for k, v in params.items())])
    work = Path(out)
    work.mkdir(parents=True, exist_ok=True)
    dataset_dir, datalist = experiment_data(task, work, dataset_dir, datalist, cases, size, seed)
    fold_list = list(range(folds))
    per_fold = {k: fold_overrides(task, datalist, dataset_dir, k) for k in fold_list}
    runs = [
        Run(name=f"{arch}-double-until-{level}/fold{k}", bundle=TASKS[task], train=["train.json"],
            evaluate=["train.json", "evaluate.json"],
            overrides={"dataset_dir": str(dataset_dir), "datalist": str(datalist), "fold": k, "arch": arch,
                       "pocket": False, "double_until": level, "cpu_threads": threads, "seed": seed,
                       **per_fold[k], **override},
            cpus=threads)
        for level in params for k in fold_list
    ]
    dirs = run_all(runs, work, name="ablation", jobs=jobs, executor=executor, address=address)
    rows, case_rows = [], []
    md = [f"# {task} {arch}: doubling up to level L, {folds}-fold cross-validation", "",
          "| L | parameters (M) | cases | Dice mean ± std | Dice median | HD95 (mm) median | ASD (mm) median |",
          "|---:|---:|---:|---:|---:|---:|---:|"]
    for level, count in params.items():
        values: dict[str, dict[str, float]] = {m: {} for m in METRICS}
        for k in fold_list:
            d = dirs[f"{arch}-double-until-{level}/fold{k}"]
            if json.loads((d / "finished.json").read_text())["parameters"] != count:
                raise RuntimeError(f"{d}: the trained network's parameter count differs from level {level}'s.")
            for m in METRICS:
                found = per_case(d / "eval", m)
                values[m].update(found)
                case_rows += [{"level": level, "fold": k, "case": c, "metric": METRICS[m], "value": v}
                              for c, v in found.items()]
        s = {m: describe(list(values[m].values())) for m in METRICS}
        for m in METRICS:
            rows.append({"level": level, "parameters": count, "metric": METRICS[m], **s[m]})
        dice = s["val_mean_dice"]
        md.append(f"| {level} | {count / 1e6:.3f} | {dice['n']} | {dice['mean']:.3f} ± {dice['std']:.3f} | "
                  f"{dice['median']:.3f} | {s['val_hd95']['median']:.2f} | {s['val_asd']['median']:.2f} |")
    md += ["", f"L = {max(params)} is the full network, L = 0 the pocket one; std is the sample standard deviation; "
           "distances in mm on each label's own grid."]
    text = "\n".join(md) + "\n"
    (work / "report.md").write_text(text)
    write_csv(work / "report.csv", rows)
    write_csv(work / "cases.csv", case_rows)
    return text
