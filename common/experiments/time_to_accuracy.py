"""Validation Dice against training time: which training recipe gets a 3D bundle furthest in an hour of CPU.

For every recipe (the bundle's ``train.json`` alone, or with the CPU overlays) and width, this command trains the
bundle as a user would (``python -m monai.bundle run training`` in a child process, so that its peak memory is its
own) for a wall-clock budget, with a snapshot of the weights every ``snapshot_minutes`` (the bundle's
``TimeBudget``, which also decays the learning rate over the budget and carries the clock over a resume). The
in-training validation is switched off, so that only training counts. Afterwards every snapshot is scored as a
user's model would be: the bundle's ``inference.json`` writes the masks of the validation cases **on their input
grid, at full resolution**, and the Dice of each mask against its label file is averaged. Written to
``work_dir``: ``time_to_accuracy.csv`` (one row per snapshot: wall and CPU seconds, steps, Dice),
``time_to_accuracy.png`` (Dice against minutes, one line per recipe) and the Markdown table it prints.

Rerunning with the same ``work_dir`` skips what is done, resumes an interrupted training (its clock carried on) and
scores only new snapshots::

    pocket experiment time_to_accuracy --bundle nfbs --minutes 60 --snapshot_minutes 15 --work_dir /work/tta
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import psutil

from common import REPO_ROOT
from common.benchmarks.profile import machine_summary
from common.errors import InvalidInputError
from common.experiments.runs import override_config

__all__ = ["RECIPES", "dice_on_input_grid", "run"]

BUNDLES = {"nfbs": "nfbs_brain_mri_segmentation", "lits": "lits_liver_ct_segmentation",
           "brats": "brats_tumor_mri_segmentation"}
#: recipe name -> overlays after train.json
RECIPES = {"defaults": [], "cpu": ["train_cpu.json"], "cpu_head": ["train_cpu.json", "train_cpu_head.json"]}
FIELDS = ["recipe", "width", "parameters", "minutes", "wall_s", "cpu_s", "iteration", "s_per_step", "peak_rss_gb",
          "val_dice", "cases", "snapshot", "machine"]


def _csv_list(value: str | tuple[str, ...] | list[str]) -> list[str]:
    return [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _train(configs: Path, overlays: list[str], run_dir: Path, override: dict[str, Any]) -> float:
    """Run the bundle's training in a child process; return the peak RSS (GB) of its process tree."""
    files = [str(configs / f) for f in ["train.json", *overlays]]
    files.append(str(override_config(run_dir / "train_overrides.json", override)))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", json.dumps(files),
           "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
           "--bundle_root", str(run_dir)]
    log = open(run_dir / "train.log", "a")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(run_dir))
    peak = [0]

    def watch() -> None:
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peak[0] = max(peak[0], _tree_rss(ps))
            except psutil.Error:
                break
            time.sleep(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rc = proc.wait()
    watcher.join(timeout=5)
    log.close()
    if rc != 0:
        tail = (run_dir / "train.log").read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"training in {run_dir} failed (exit {rc}):\n" + "\n".join(tail))
    return peak[0] / 1024**3


def dice_on_input_grid(mask_file: str | os.PathLike[str], label_file: str | os.PathLike[str]) -> float:
    """Foreground Dice of a written mask against its label file; both must lie on the same grid."""
    m, lab = nib.load(str(mask_file)), nib.load(str(label_file))
    if m.shape[:3] != lab.shape[:3] or not np.allclose(m.affine, lab.affine, atol=1e-3):
        raise InvalidInputError(f"{mask_file}: the mask is not on its label's grid ({m.shape} vs {lab.shape}).")
    a = np.asarray(m.dataobj).reshape(m.shape[:3]) > 0
    b = np.asarray(lab.dataobj).reshape(lab.shape[:3]) > 0
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(a, b).sum() / denom)


def score_snapshot(configs: Path, run_dir: Path, snapshot: Path, val: list[dict[str, Any]], dataset_dir: str,
                   threads: int) -> list[float]:
    """Dice of each validation case's mask written by ``inference.json`` with ``snapshot`` as the model."""
    from monai.bundle import ConfigWorkflow

    score = run_dir / "scores" / snapshot.stem
    models = score / "models"
    models.mkdir(parents=True, exist_ok=True)
    shutil.copy(snapshot, models / "model.pt")
    shutil.copy(run_dir / "models" / "training_params.json", models / "training_params.json")
    out = score / "masks"
    wf = ConfigWorkflow(config_file=str(configs / "inference.json"), meta_file=str(configs / "metadata.json"),
                        logging_file=str(configs / "logging.conf"), workflow_type="infer", bundle_root=str(score),
                        dataset_dir=dataset_dir, output_dir=str(out), cpu_threads=threads, engine="torch",
                        data=[{"image": e["image"]} for e in val])
    wf.initialize()
    wf.run()
    wf.finalize()
    dices = []
    for e in val:
        name = Path(e["image"] if isinstance(e["image"], str) else e["image"][0]).name
        stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
        found = sorted(out.glob(f"{stem}_seg.*"))
        if not found:
            raise FileNotFoundError(f"inference wrote no mask for {e['image']} in {out}.")
        dices.append(dice_on_input_grid(found[0], e["label"]))
    return dices


def snapshot_parameters(snapshot: Path) -> int:
    """Trainable parameters in a weights snapshot (normalisation running statistics left out)."""
    import torch

    state = torch.load(snapshot, map_location="cpu", weights_only=True)
    return sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var",
                                                                        "num_batches_tracked")))


def _done_rows(table: Path) -> list[dict[str, str]]:
    if not table.is_file():
        return []
    with open(table, newline="") as f:
        return list(csv.DictReader(f))


def run(
    bundle: str = "nfbs",
    recipes: str | tuple[str, ...] = "defaults,cpu,cpu_head",
    widths: str | tuple[str, ...] = "pocket",
    minutes: float = 60.0,
    snapshot_minutes: float = 15.0,
    score_minutes: str | float | tuple[float, ...] | None = None,
    work_dir: str = "/tmp/time_to_accuracy",
    dataset_dir: str | None = None,
    datalist: str | None = None,
    cases: int = 24,
    hard: bool = False,
    fold: int = 0,
    threads: int = 2,
    num_workers: int = 1,
    seed: int = 0,
    **override: Any,
) -> str:
    """Train every recipe x width for ``minutes``; score its snapshots on the input grid; table, CSV and plot.

    Args:
        bundle: ``nfbs``, ``lits`` or ``brats``.
        recipes: comma-separated names of ``RECIPES`` (``defaults`` = the bundle's train.json alone).
        widths: ``pocket`` and/or ``full``.
        minutes: the training budget (wall clock).
        snapshot_minutes: the snapshot interval (wall clock).
        score_minutes: score only the snapshots taken at these minutes (comma-separated, e.g. ``15,30,60``;
            default: every snapshot). Scoring the defaults' 1 mm sliding windows takes many minutes per snapshot on
            a CPU; the others stay on disk, and a rerun without it scores them.
        work_dir: everything goes here; a rerun continues what is there.
        dataset_dir: the data (fold ``fold`` validates). Without it and ``datalist``: ``cases`` look-alike cases
            at the real release's size (as ``pocket engine_benchmark`` writes them), generated once in ``work_dir``.
        datalist: the data list of ``dataset_dir``.
        cases: look-alike cases to generate.
        hard: the look-alike's hard mode (its default is easy enough that every recipe ends near 0.99).
        fold: the validation fold.
        threads: CPU threads of training and scoring.
        num_workers: data-loader workers of training.
        seed: of the look-alike data and of training.
        override: further config overrides for every training (e.g. ``--cache_rate 0.5``).
    """
    if bundle not in BUNDLES:
        raise InvalidInputError(f"bundle must be one of {', '.join(BUNDLES)}, got {bundle!r}.")
    recipe_names, width_names = _csv_list(recipes), _csv_list(widths)
    for r in recipe_names:
        if r not in RECIPES:
            raise InvalidInputError(f"unknown recipe {r!r}; recipes: {', '.join(RECIPES)}.")
    for w in width_names:
        if w not in ("pocket", "full"):
            raise InvalidInputError(f"width must be pocket or full, got {w!r}.")
    wanted = None if score_minutes is None else [float(m) for m in _csv_list(  # fire passes 15,30,60 as a tuple
        score_minutes if isinstance(score_minutes, str) else [str(m) for m in np.atleast_1d(score_minutes)])]
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if dataset_dir is None or datalist is None:
        from common.benchmarks.engines import SPECS, prepare_data

        dataset_dir, datalist = prepare_data(SPECS[bundle], work / "data", cases, hard=hard)
    from common.data.datalists import load_fold

    val = load_fold(datalist, dataset_dir, fold, "val")
    configs = work / "bundle" / "configs"
    if not configs.is_dir():
        shutil.copytree(REPO_ROOT / "bundles" / BUNDLES[bundle] / "configs", configs)
        if bundle == "lits":  # the documented first step, on the copy: spacing and intensities of the data
            from common.data.fingerprint import fingerprint

            fingerprint(datalist, dataset_dir, fold=fold, bundle_dir=str(configs.parent))
    table = work / "time_to_accuracy.csv"
    rows = _done_rows(table)
    for recipe in recipe_names:
        for width in width_names:
            run_dir = work / "runs" / f"{recipe}_{width}"
            run_dir.mkdir(parents=True, exist_ok=True)
            snaps = run_dir / "models" / "snapshots"
            state = run_dir / "peak_rss_gb.txt"
            finished = (run_dir / "finished").is_file()
            if not finished:
                print(f"[time_to_accuracy] training {recipe} {width} for {minutes} min", flush=True)
                if not (run_dir / "machine.txt").is_file():  # the machine the training runs on, beside its times
                    (run_dir / "machine.txt").write_text(machine_summary())
                peak = _train(configs, RECIPES[recipe], run_dir, {
                    "dataset_dir": dataset_dir, "datalist": datalist, "fold": fold, "pocket": width == "pocket",
                    "time_budget_minutes": minutes, "snapshot_minutes": snapshot_minutes, "epochs": 100000,
                    "val_interval": 10**9, "validate#dataset#cache": "none",
                    "cpu_threads": threads, "num_workers": num_workers, "seed": seed,
                    **override})
                old = float(state.read_text()) if state.is_file() else 0.0
                state.write_text(f"{max(old, peak):.3f}")
                (run_dir / "finished").write_text("")
            trained = json.loads((run_dir / "models" / "training_params.json").read_text()).get("pocket")
            if bool(trained) != (width == "pocket"):  # as the network builder read it
                raise RuntimeError(f"{run_dir} was to train the {width} width, but its training_params.json records "
                                   f"pocket={trained!r}.")
            peak_gb = float(state.read_text()) if state.is_file() else float("nan")
            machine_file = run_dir / "machine.txt"
            machine = machine_file.read_text().strip() if machine_file.is_file() else "unknown"
            for r in rows:  # rows of a table written before machines were recorded
                if r["recipe"] == recipe and r["width"] == width and not r.get("machine"):
                    r["machine"] = machine
            with open(snaps / "snapshots.csv", newline="") as f:
                snapshots = list(csv.DictReader(f))
            for r in rows:  # rows of a table written before parameters were recorded
                if r["recipe"] == recipe and r["width"] == width and not r.get("parameters"):
                    r["parameters"] = snapshot_parameters(snaps / r["snapshot"])
            for snap in snapshots:
                if any(r["recipe"] == recipe and r["width"] == width and r["snapshot"] == snap["file"] for r in rows):
                    continue
                if wanted is not None and not any(abs(float(snap["minutes"]) - m) < 1e-3 for m in wanted):
                    continue
                print(f"[time_to_accuracy] scoring {recipe} {width} {snap['file']}", flush=True)
                dices = score_snapshot(configs, run_dir, snaps / snap["file"], val, dataset_dir, threads)
                it = int(snap["iteration"])
                rows.append({"recipe": recipe, "width": width, "parameters": snapshot_parameters(snaps / snap["file"]),
                             "minutes": float(snap["minutes"]),
                             "wall_s": float(snap["wall_s"]), "cpu_s": float(snap["cpu_s"]), "iteration": it,
                             "s_per_step": round(float(snap["wall_s"]) / max(it, 1), 3),
                             "peak_rss_gb": round(peak_gb, 2), "val_dice": round(float(np.mean(dices)), 4),
                             "cases": len(dices), "snapshot": snap["file"], "machine": machine})
                _write(table, rows)
    _write(table, rows)
    plot(rows, work / "time_to_accuracy.png", bundle, threads)
    text = render(rows, bundle, minutes, len(val))
    (work / "time_to_accuracy.md").write_text(text + "\n")
    return text


def _write(table: Path, rows: list[dict[str, Any]]) -> None:
    tmp = table.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, table)


def plot(rows: list[dict[str, Any]], path: Path, bundle: str, threads: int = 2) -> None:
    """Validation Dice against training minutes, one line per recipe x width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    lowest = 1.0
    for key in sorted({(r["recipe"], r["width"]) for r in rows}):
        pts = sorted((float(r["minutes"]), float(r["val_dice"])) for r in rows if (r["recipe"], r["width"]) == key)
        lowest = min([lowest] + [p[1] for p in pts])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{key[0]} ({key[1]})")
    ax.set_xlabel("training wall time (minutes)")
    ax.set_ylabel("validation Dice on the input grid")
    ax.set_xlim(left=0)
    ax.set_ylim(max(0.0, lowest - 0.05), 1.0)  # snapshots only: no point is drawn where none was measured
    ax.grid(alpha=0.3)
    ax.set_title(f"{bundle}: validation Dice against training time ({threads} threads)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(rows: list[dict[str, Any]], bundle: str, minutes: float, cases: int) -> str:
    """Markdown table: one row per recipe x width, the Dice at each snapshot time."""
    marks = sorted({float(r["minutes"]) for r in rows})
    lines = [f"{bundle}: validation Dice on the input grid ({cases} cases) after training for the given minutes "
             f"(budget {minutes:g} min)", "",
             "| recipe | width | parameters | s/step | steps | peak RSS GB | "
             + " | ".join(f"Dice @{m:g} min" for m in marks) + " |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * len(marks)]
    for key in sorted({(r["recipe"], r["width"]) for r in rows}, key=lambda k: (list(RECIPES).index(k[0]), k[1])):
        mine = sorted((r for r in rows if (r["recipe"], r["width"]) == key), key=lambda r: float(r["minutes"]))
        by_min = {float(r["minutes"]): float(r["val_dice"]) for r in mine}
        last = mine[-1]
        params = f"{int(last['parameters']) / 1e6:.3f} M" if last.get("parameters") else "–"
        lines.append(f"| {key[0]} | {key[1]} | {params} | {float(last['s_per_step']):.2f} | {last['iteration']} | "
                     f"{float(last['peak_rss_gb']):.1f} | "
                     + " | ".join(f"{by_min[m]:.3f}" if m in by_min else "–" for m in marks) + " |")
    machines = sorted({r.get("machine") or "unknown" for r in rows})
    lines += ["", "Machine: " + "; ".join(
        f"{m} ({', '.join(sorted({r['recipe'] for r in rows if (r.get('machine') or 'unknown') == m}))})"
        for m in machines) if len(machines) > 1 else f"Machine: {machines[0]}."]
    return "\n".join(lines)
