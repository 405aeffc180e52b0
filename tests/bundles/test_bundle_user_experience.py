"""What a user sees from ``python -m monai.bundle run``: run as a user runs it (a subprocess whose output is a pipe,
i.e. not a terminal, as in CI or ``nohup``), on a tiny NFBS look-alike.

A training prints one progress line per epoch and no per-iteration lines, records its run in MLflow through
MONAI's own ``--tracking mlflow`` and in TensorBoard by default; training, evaluation and inference print no
deprecation warning and MONAI's config-trust warning at most once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_helpers import assert_tensorboard_tags, bundle_dir, nfbs_lookalike

BUNDLE = "nfbs_brain_mri_segmentation"
EPOCHS = 3
WARNINGS = re.compile(r"DeprecationWarning|FutureWarning|deprecated", re.IGNORECASE)


def _run(*args: str, root: Path, data: dict) -> str:
    """``python -m monai.bundle run`` from the bundle folder with the model-zoo file arguments; its output."""
    configs = bundle_dir(BUNDLE) / "configs"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # the user's default warning filters
    cmd = [sys.executable, "-m", "monai.bundle", "run", *args, "--meta_file", str(configs / "metadata.json"),
           "--logging_file", str(configs / "logging.conf"), "--bundle_root", str(root),
           "--dataset_dir", data["dataset_dir"], "--datalist", data["datalist"], "--cpu_threads", "1"]
    done = subprocess.run(cmd, cwd=bundle_dir(BUNDLE), env=env, capture_output=True, text=True, timeout=600)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    return log


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return nfbs_lookalike(tmp_path_factory.mktemp("ux_data"), cases=6, size=24)


@pytest.fixture(scope="module")
def training(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("ux_bundle")
    configs = bundle_dir(BUNDLE) / "configs"
    log = _run("training", "--config_file", str(configs / "train.json"), "--epochs", str(EPOCHS),
               "--val_interval", "1", "--patch_size", "[16,16,16]", "--init_filters", "4", "--num_workers", "0",
               "--tracking", "mlflow", root=root, data=data)
    return {"root": root, "log": log}


def test_training_off_a_terminal_prints_one_progress_line_per_epoch(training):
    log = training["log"]
    lines = re.findall(r"common\.training\.progress - INFO - (epoch \d+/\d+), loss [0-9.]+, .* ETA", log)
    assert lines == [f"epoch {e}/{EPOCHS}" for e in range(1, EPOCHS + 1)], log[-3000:]
    assert "Iter:" not in log  # MONAI's per-iteration loss lines: only at DEBUG
    assert "\r" not in log  # no progress bar drawn into a pipe


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")  # SQLAlchemy, in MLflow
def test_mlflow_records_the_run_with_its_params_and_metrics(training):
    from mlflow.tracking import MlflowClient

    eval_dir = training["root"] / "eval"
    client = MlflowClient(tracking_uri=f"sqlite:///{eval_dir / 'mlruns.db'}")  # MONAI 1.6's default store
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1, runs
    run = runs[0]
    assert run.data.params["max_epochs"] == str(EPOCHS), run.data.params
    history = client.get_metric_history(run.info.run_id, "val_mean_dice")
    assert [m.step for m in history] == list(range(1, EPOCHS + 1))
    assert {"train_loss", "train_mean_dice", "val_mean_dice"} <= set(run.data.metrics), run.data.metrics
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert any(a.startswith("config_") and a.endswith(".json") for a in artifacts), artifacts  # the run's config


def test_tensorboard_events_are_written_by_default(training):
    assert_tensorboard_tags(training["root"] / "eval", epochs=EPOCHS, val_interval=1)


def test_bundle_runs_print_no_deprecation_warning_and_the_trust_warning_once(data, training):
    configs = bundle_dir(BUNDLE) / "configs"
    root = training["root"]
    evaluation = _run("evaluating", "--config_file", f"['{configs / 'train.json'}','{configs / 'evaluate.json'}']",
                      "--patch_size", "[16,16,16]", root=root, data=data)
    inference = _run("--config_file", str(configs / "inference.json"), root=root, data=data)
    for name, log in {"training": training["log"], "evaluation": evaluation, "inference": inference}.items():
        assert not WARNINGS.search(log), (name, [line for line in log.splitlines() if WARNINGS.search(line)])
        assert log.count("parsing config_file") == 1, name
    cases = re.findall(r"common\.training\.progress - INFO - case (\d+)/(\d+) ", inference)
    assert cases == [(str(i), "6") for i in range(1, 7)], inference[-2000:]  # one line per volume
    assert "evaluation pictures: " in evaluation and (root / "eval" / "cases.png").is_file()
