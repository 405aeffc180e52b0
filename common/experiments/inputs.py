"""What an experiment runs on: the user's data or look-alike cases written once, and what each fold adds.

The PocketNet experiments (:mod:`common.experiments.full_vs_pocket`, ``depth_ablation``, ``saturation``,
``classifier_auc``) take either a dataset folder and its data list or, without them, write look-alike cases in
the real layout under their output folder, once (a marker file remembers the request).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import REPO_ROOT
from common.errors import InvalidInputError

__all__ = ["TASKS", "csv_list", "experiment_data", "fold_overrides", "lookalike_data"]

#: task -> bundle folder
TASKS = {"nfbs": "nfbs_brain_mri_segmentation", "lits": "lits_liver_ct_segmentation",
         "brats": "brats_tumor_mri_segmentation"}


def csv_list(value: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or ``("a", "b")`` (fire passes either) as a list of names."""
    return [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]


def lookalike_data(task: str, out: Path, cases: int, size: int, seed: int) -> tuple[str, str]:
    """Write look-alike cases and their 5-fold data list under ``out`` once; return ``(dataset_dir, datalist)``."""
    marker = out / "data.json"
    if marker.is_file():
        found = json.loads(marker.read_text())
        if found.get("request") == [task, cases, size, seed]:
            return found["dataset_dir"], found["datalist"]
    if task == "covidx":
        from common.datasets import covidx

        dataset_dir = covidx.write_lookalike(str(out / "covidx"), cases=cases, seed=seed, size=size)
        datalist = str(out / "covidx_lookalike.json")
        covidx.build_datalist(dataset_dir, out=datalist)
    elif task == "nfbs":
        from common.datasets import nfbs

        dataset_dir = nfbs.write_lookalike(str(out / "nfbs"), cases=cases, seed=seed, size=size)
        datalist = str(out / "nfbs_lookalike.json")
        nfbs.build_datalist(dataset_dir, out=datalist)
    else:
        from common.experiments.cascade import make_data

        found = make_data(task, out, cases, size, seed)
        dataset_dir, datalist = found["dataset_dir"], found["datalist"]
    marker.write_text(json.dumps({"request": [task, cases, size, seed], "dataset_dir": dataset_dir,
                                  "datalist": datalist}))
    return dataset_dir, datalist


def fold_overrides(task: str, datalist: str, dataset_dir: str, fold: int,
                   overlays: Sequence[str] = ()) -> dict[str, Any]:
    """What a fold's runs need beyond the fold number: LiTS measures its fingerprint on the fold's training cases.

    An overlay's own ``fingerprint#...`` settings (the short preset's CT window) stay on top of the measured block.
    """
    if task != "lits":
        return {}
    from common.data.fingerprint import compute

    block = compute(datalist, dataset_dir, fold=fold, verbose=False)
    for name in overlays:
        own = json.loads((REPO_ROOT / "bundles" / TASKS[task] / "configs" / name).read_text())
        block.update({k.split("#", 1)[1]: v for k, v in own.items() if k.startswith("fingerprint#")})
    return {"fingerprint": block}


def experiment_data(task: str, work: Path, dataset_dir: str | None, datalist: str | None, cases: int, size: int,
                    seed: int) -> tuple[str, str]:
    """``(dataset_dir, datalist)``: the user's pair as given, or look-alike data under ``work/data``."""
    if (dataset_dir is None) != (datalist is None):
        raise InvalidInputError("pass both dataset_dir and datalist (your data), or neither (look-alike data).")
    if dataset_dir is None:
        return lookalike_data(task, work / "data", cases, size, seed)
    return str(dataset_dir), str(datalist)
