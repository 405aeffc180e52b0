"""Helpers for the bundle tests: run a bundle's configs the way model-zoo CI does, on tiny settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

from monai.bundle import ConfigWorkflow

from common import REPO_ROOT

ROOT = REPO_ROOT
BUNDLES = ROOT / "bundles"
SCHEMA = ROOT / "tests" / "bundles" / "meta_schema_20240725.json"


def bundle_dir(name: str) -> Path:
    return BUNDLES / name


def all_bundles() -> list[str]:
    return sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").exists())


def run_workflow(
    bundle: str, configs: list[str], workflow_type: str, bundle_root: Path, configs_dir: Path | None = None, **override
) -> ConfigWorkflow:
    """initialize, check_properties() == [], run, finalize; returns the workflow for inspection.

    ``configs_dir`` runs a copy of the bundle's configs (e.g. after a command rewrote them) instead of the
    committed ones.
    """
    # "auto" picks the thread count from the machine's load, and float rounding (so the learning floors)
    # with it: tests run on one thread unless they ask for another.
    override.setdefault("cpu_threads", 1)
    d = Path(configs_dir) if configs_dir is not None else bundle_dir(bundle) / "configs"
    files = [str(d / c) for c in configs]
    wf = ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(d / "metadata.json"),
        logging_file=str(d / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(bundle_root),
        **override,
    )
    wf.initialize()
    missing = wf.check_properties()
    assert missing == [] or missing is None, f"missing bundle properties: {missing}"
    wf.run()
    wf.finalize()
    return wf


def read_json(path: str | os.PathLike) -> dict:
    with open(path) as f:
        return json.load(f)


def assert_training_refuses(
    bundle: str, root: Path, bad_file: str, words: str, configs_dir: Path | None = None, **override
) -> str:
    """Training on data with ``bad_file`` broken stops before anything is written: the data check raises a
    ``DataCheckError`` whose problem for ``bad_file`` is one sentence containing ``words``, and a
    ``models/model.pt`` from an earlier run is left as it was. Returns that sentence."""
    import pytest

    from common.data.datacheck import DataCheckError

    models = Path(root) / "models"
    models.mkdir(parents=True)
    (models / "model.pt").write_bytes(b"weights of an earlier run")
    with pytest.raises(Exception) as info:
        run_workflow(bundle, ["train.json"], "train", root, configs_dir=configs_dir, epochs=1, **override)
    err = info.value
    while err is not None and not isinstance(err, DataCheckError):
        err = err.__cause__ or err.__context__
    assert err is not None, f"expected a DataCheckError, got {info.value!r}"
    sentence = next(p for p in err.problems if bad_file in p)
    assert words in sentence and sentence.count(". ") == 0, sentence  # one sentence, naming the file
    assert (models / "model.pt").read_bytes() == b"weights of an earlier run"
    assert sorted(os.listdir(models)) == ["model.pt"]
    return sentence
