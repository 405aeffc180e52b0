"""The collection's demo: look-alike NFBS data, a short pocket U-Net training, evaluation, inference.

``bash scripts/demo.sh`` runs it. Every step is the same ``python -m monai.bundle ...`` command a user would
type (printed before it runs), so the demo doubles as a worked example of the bundle's README.
"""

from __future__ import annotations

import csv
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from common.datasets import nfbs

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "nfbs_brain_mri_segmentation"


def _run(step: str, args: list[str]) -> None:
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    print(f"\n=== {step}\n$ {' '.join(shlex.quote(a) for a in cmd)}", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run(cmd, check=True, env=env, cwd=BUNDLE)


def _read_summary(path: Path) -> dict[str, float]:
    with open(path) as f:
        return {row[0]: float(row[1]) for row in csv.reader(f) if len(row) == 2}


def demo(out: str = "demo_output", cases: int = 8, epochs: int = 10, arch: str = "unet", pocket: bool = True) -> dict:
    """The README's main job: look-alike NFBS data, train, evaluate and infer with a pocket U-Net bundle.

    Everything goes under ``out``; returns the summary it prints (Dice, parameters, time).
    """
    start = time.time()
    out_dir = Path(out).resolve()
    print(f"=== look-alike NFBS data: {cases} T1 volumes with brain masks -> {out_dir / 'data'}", flush=True)
    dataset_dir = nfbs.write_lookalike(str(out_dir / "data"), cases=cases, seed=0, size=40)
    datalist = str(out_dir / "nfbs_datalist.json")
    nfbs.build_datalist(dataset_dir, out=datalist)
    bundle_root = str(out_dir / "bundle")
    configs = BUNDLE / "configs"
    common = [
        "--bundle_root", bundle_root, "--dataset_dir", dataset_dir, "--datalist", datalist,
        "--arch", arch, "--pocket", str(pocket), "--init_filters", "16", "--patch_size", "[32,32,32]",
        "--num_workers", "0",
    ]
    _run("train (CPU, a few minutes)", [
        "run", "training", "--config_file", str(configs / "train.json"), *common, "--epochs", str(epochs),
        "--val_interval", str(max(1, epochs // 2)), "--learning_rate", "0.003", "--num_samples", "4",
        "--resume", "False",
    ])
    _run("evaluate: Dice, HD95, ASD per case; choose the post-processing", [
        "run", "evaluating", "--config_file", f"['{configs / 'train.json'}','{configs / 'evaluate.json'}']", *common,
    ])
    pred_dir = str(out_dir / "predictions")
    _run("inference: one brain mask per volume, on the input grid", [
        "run", "inferring", "--config_file", str(configs / "inference.json"), "--bundle_root", bundle_root,
        "--dataset_dir", dataset_dir, "--output_dir", pred_dir, "--arch", arch, "--pocket", str(pocket),
        "--init_filters", "16", "--patch_size", "[32,32,32]",
    ])
    from monai.bundle import ConfigParser

    from common.networks import count_parameters

    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    parser.update({"arch": arch, "pocket": pocket, "init_filters": 16, "patch_size": [32, 32, 32]})
    summary = _read_summary(Path(bundle_root) / "eval" / "metrics.csv")
    params = count_parameters(parser.get_parsed_content("network_def"))
    parser["pocket"] = not pocket
    other = count_parameters(parser.get_parsed_content("network_def", lazy=False))
    result = {
        "validation Dice": round(summary["val_mean_dice"], 4),
        "validation HD95 (mm)": round(summary["val_hd95"], 2),
        "parameters": params,
        f"parameters if pocket={not pocket}": other,
        "predictions": len(list(Path(pred_dir).glob("*_seg.nii.gz"))),
        "minutes": round((time.time() - start) / 60, 1),
    }
    eval_dir = Path(bundle_root) / "eval"
    pictures = {"worst / median / best case": eval_dir / "cases.png", "Dice and HD95 per strategy": eval_dir /
                "boxplot.png", "training curves": f"tensorboard --logdir {eval_dir}"}
    print("\n=== demo summary (pocket U-Net, look-alike NFBS, CPU)")
    for key, value in result.items():
        print(f"{key:>26}: {value}")
    print("\n=== pictures")
    for key, value in pictures.items():
        print(f"{key:>26}: {value}")
    print(f"outputs under {out_dir}")
    return result
