"""A training killed with SIGKILL resumes from its last complete checkpoint; a second training on the same
checkpoint folder stops with one sentence, and the lock dies with the process that held it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bundle_helpers import ROOT, bundle_dir, nfbs_lookalike, run_workflow

from common.errors import InvalidInputError
from common.training.lock import lock_checkpoint_dir

BUNDLE = "nfbs_brain_mri_segmentation"
TINY = {"patch_size": "[16,16,16]", "num_workers": "0", "init_filters": "8", "cache_rate": "1.0", "num_samples": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return nfbs_lookalike(tmp_path_factory.mktemp("nfbs_kill"), cases=6, size=24)


def start_training(root: Path, data: dict, epochs: int) -> subprocess.Popen:
    configs = bundle_dir(BUNDLE) / "configs"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(configs / "train.json"),
           "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
           "--bundle_root", str(root), "--dataset_dir", data["dataset_dir"], "--datalist", data["datalist"],
           "--epochs", str(epochs), "--val_interval", "100", "--cpu_threads", "1"]
    for key, value in TINY.items():
        cmd += [f"--{key}", value]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(models: Path, proc: subprocess.Popen, epoch: int, timeout: float = 300) -> None:
    """Until the resume checkpoint of ``epoch`` or a later one is written."""

    def written() -> bool:
        return any(int(p.name.split("=")[1][:-3]) >= epoch for p in models.glob("last_checkpoint_epoch=*.pt"))

    start = time.time()
    while not written():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() - start < timeout, f"no checkpoint of epoch {epoch} in {models} after {timeout} s"
        time.sleep(0.2)


def test_sigkill_during_an_epoch_resumes_from_the_last_complete_checkpoint(data, tmp_path):
    proc = start_training(tmp_path, data, epochs=1000)
    models = tmp_path / "models"
    wait_for(models, proc, 2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    complete = sorted(p.name for p in models.glob("last_checkpoint_epoch=*.pt"))
    for name in complete:  # whatever the kill interrupted, every checkpoint file left is whole
        torch.load(models / name, map_location="cpu", weights_only=True)
    done = max(int(n.split("=")[1][:-3]) for n in complete)
    wf = run_workflow(BUNDLE, ["train.json"], "train", tmp_path, **data, **{k: eval(v) for k, v in TINY.items()},
                      epochs=done + 1, val_interval=100)
    trainer = wf.parser.get_parsed_content("train#trainer")
    per_epoch = len(wf.parser.get_parsed_content("train#dataloader"))
    assert trainer.state.epoch == done + 1 and trainer.state.iteration == (done + 1) * per_epoch  # one epoch ran
    assert (models / f"last_checkpoint_epoch={done + 1}.pt").exists()


def test_second_training_on_the_same_folder_refuses_until_the_first_is_gone(data, tmp_path):
    proc = start_training(tmp_path, data, epochs=1000)
    wait_for(tmp_path / "models", proc, 1)
    with pytest.raises(InvalidInputError) as err:
        lock_checkpoint_dir_in_child(tmp_path / "models")
    assert str(err.value).startswith(f"{(tmp_path / 'models').resolve()}: another training (pid {proc.pid}) is")
    os.kill(proc.pid, signal.SIGKILL)  # the kernel drops the lock with the process
    proc.wait()
    lock_checkpoint_dir_in_child(tmp_path / "models")


def lock_checkpoint_dir_in_child(folder: Path) -> None:
    """lock_checkpoint_dir in a fresh process (this one may hold locks of other tests); re-raises its error."""
    code = ("import sys; from common.training.lock import lock_checkpoint_dir\n"
            "try:\n    lock_checkpoint_dir(sys.argv[1])\nexcept Exception as e:\n    print(e); sys.exit(3)")
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode == 3:
        raise InvalidInputError(proc.stdout.strip())
    assert proc.returncode == 0, proc.stderr


def test_the_same_process_may_take_its_own_lock_again(tmp_path):
    assert lock_checkpoint_dir(tmp_path / "models") == lock_checkpoint_dir(tmp_path / "models")
    assert (tmp_path / "models.lock").read_text() == f"pid {os.getpid()}"


KILL_MID_WRITE = """
import os, sys, torch
real_save, calls = torch.save, []
def save(obj, f, *args, **kwargs):  # the third checkpoint write dies half-way, as a SIGKILL would leave it
    calls.append(1)
    if len(calls) == 3:
        import io
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        (f.write if hasattr(f, "write") else open(f, "wb").write)(data[: len(data) // 2])
        getattr(f, "flush", lambda: None)()
        os._exit(137)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
import ast
from monai.bundle.scripts import run

def value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text

run(**{k: value(v) for k, v in (a.split("=", 1) for a in sys.argv[1:])})
"""


def test_kill_during_a_checkpoint_write_leaves_every_checkpoint_whole(data, tmp_path):
    configs = bundle_dir(BUNDLE) / "configs"
    args = {"run_id": "training", "config_file": str(configs / "train.json"),
            "meta_file": str(configs / "metadata.json"), "bundle_root": str(tmp_path),
            "dataset_dir": data["dataset_dir"], "datalist": data["datalist"],
            "epochs": "20", "val_interval": "100", "cpu_threads": "1", **TINY}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, *(f"{k}={v}" for k, v in args.items())],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 137, proc.stderr[-3000:]
    models = tmp_path / "models"
    checkpoints = sorted(models.glob("last_checkpoint_epoch=*.pt"))
    assert checkpoints, sorted(os.listdir(models))
    for path in [*checkpoints, *models.glob("model.pt")]:  # the interrupted write never took a real name
        torch.load(path, map_location="cpu", weights_only=True)
    done = max(int(p.name.split("=")[1][:-3]) for p in checkpoints)
    wf = run_workflow(BUNDLE, ["train.json"], "train", tmp_path, **data, **{k: eval(v) for k, v in TINY.items()},
                      epochs=done + 1, val_interval=100)
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == done + 1
    assert not [p.name for p in models.iterdir() if p.name.startswith("tmp")]  # the resume removed the debris
