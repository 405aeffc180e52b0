"""Experiment runs: one directory per (experiment, arch, variant, fold) run, skipped when done, resumed when not.

An experiment (``pocket experiment table1``, ``ablation``) is a list of :class:`Run`: a bundle, the config files
it trains and evaluates with, and its overrides. Each run gets ``<out>/runs/<name>/`` holding ``run.json`` (the
run and the hash of its merged config), ``log.txt``, ``models/`` and ``eval/`` (the bundle's own metric files),
and ``finished.json`` once evaluation has written its metrics. Running the experiment again

- skips a run whose ``finished.json`` holds the same config hash,
- resumes one that was interrupted (same hash, not finished: the bundle's ``resume`` picks up its checkpoint),
- starts afresh one whose config changed (a bundle config or an override: the hash differs); its old results
  are removed when the command starts, so copy a finished experiment away before changing a bundle config.

A run can train on several processes (``train_processes``: torchrun with the bundle's ``multi_gpu_train.json``,
DDP on GPUs, gloo on CPUs). Runs go one after another, ``jobs`` at a time as child processes, or as Ray tasks
(``executor="ray"``) on an existing cluster (``address``) or a local instance (``address="local"``) when one
machine is not enough. Every run is the same child command, ``python -m common.experiments.runs RUN_DIR``, so a
run on Ray is the run a user gets locally; on a cluster the output folder must be on storage all nodes share.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import REPO_ROOT
from common.errors import InvalidInputError

__all__ = ["Run", "config_hash", "execute", "run_all", "state"]

EXECUTORS = ("local", "ray")
# the bundles' progress line ("epoch 3/300, loss ...", per epoch) or MONAI's per-iteration one at DEBUG
_EPOCH = re.compile(r"(?:Epoch: |\bepoch )(\d+)/(\d+)")


@dataclass
class Run:
    """One training + evaluation of a bundle; ``overrides`` go to both, ``train_overrides`` and
    ``evaluate_overrides`` to one of them (e.g. another data list to score on)."""

    name: str
    bundle: str
    train: list[str]
    evaluate: list[str]
    overrides: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    evaluate_overrides: dict[str, Any] = field(default_factory=dict)
    cpus: int = 1
    gpus: float = 0.0
    #: training processes: above 1, training runs under torchrun with the bundle's multi_gpu_train.json (DDP)
    train_processes: int = 1

    @property
    def configs(self) -> Path:
        return REPO_ROOT / "bundles" / self.bundle / "configs"


def config_hash(run: Run) -> str:
    """Hash of what decides a run's result: the merged configs (bundle files + overrides) of training and evaluation.

    Resource requests (cpus, gpus, training processes) and the run's name are left out.
    """
    from monai.bundle import ConfigParser

    merged = []
    for files, extra in ((run.train, {**run.overrides, **run.train_overrides}),
                         (run.evaluate, {**run.overrides, **run.evaluate_overrides})):
        parser = ConfigParser()
        parser.read_config([str(run.configs / f) for f in files])
        for key, value in extra.items():
            parser[key] = value
        merged.append(parser.get())
    text = json.dumps(merged, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def state(run_dir: Path, digest: str) -> str:
    """``finished``, ``interrupted`` (same config, not finished), ``changed`` (its config changed) or ``new``."""
    finished, spec = run_dir / "finished.json", run_dir / "run.json"
    if finished.is_file() and json.loads(finished.read_text()).get("hash") == digest:
        return "finished"
    if spec.is_file():
        return "interrupted" if json.loads(spec.read_text()).get("hash") == digest else "changed"
    return "new"


def prepare(run: Run, root: Path) -> tuple[Path, str]:
    """The run's directory, set up for its state; returns ``(run_dir, state)``."""
    digest = config_hash(run)
    run_dir = root / "runs" / run.name
    st = state(run_dir, digest)
    if st in ("new", "changed"):  # a changed config (bundle file or override) invalidates what was there
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps({"hash": digest, **asdict(run)}, indent=2, default=str))
    return run_dir, st


def _workflow(run: dict[str, Any], files: list[str], run_dir: Path, override: dict[str, Any]) -> Any:
    from monai.bundle import ConfigWorkflow

    configs = REPO_ROOT / "bundles" / run["bundle"] / "configs"
    wf = ConfigWorkflow(config_file=[str(configs / f) for f in files], meta_file=str(configs / "metadata.json"),
                        logging_file=str(configs / "logging.conf"), workflow_type="train", bundle_root=str(run_dir),
                        **override)
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def override_config(path: Path, override: dict[str, Any]) -> Path:
    """Write ``override`` as the last config file of a ``python -m monai.bundle run`` child and return its path.

    A JSON file keeps the values' types (``--pocket false`` on the command line would arrive as the truthy string
    ``'false'``, ``--dataset_dir 2024`` as a number) and records what the child was run with.
    """
    path.write_text(json.dumps(override, indent=2))
    return path


def _torchrun_training(run: dict[str, Any], run_dir: Path, override: dict[str, Any]) -> Any:
    """Training under torchrun (``train_processes`` ranks, DDP through the bundle's multi_gpu_train.json).

    The overrides go in as the last config file (``train_overrides.json``): nested ids and values of any type
    survive that, where command-line flags would have to be re-typed. Returns the parsed (not run) config.
    """
    from monai.bundle import ConfigParser

    configs = REPO_ROOT / "bundles" / run["bundle"] / "configs"
    files = [str(configs / f) for f in run["train"]]
    if "multi_gpu_train.json" not in run["train"]:
        files.append(str(configs / "multi_gpu_train.json"))
    files.append(str(override_config(run_dir / "train_overrides.json", override)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
           f"--nproc_per_node={run['train_processes']}", "-m", "monai.bundle", "run", "training",
           "--config_file", json.dumps(files), "--meta_file", str(configs / "metadata.json"),
           "--logging_file", str(configs / "logging.conf"), "--bundle_root", str(run_dir)]
    subprocess.run(cmd, check=True, cwd=str(REPO_ROOT))
    parser = ConfigParser()
    parser.read_config(files[:-1])
    for key, value in {**override, "bundle_root": str(run_dir)}.items():
        parser[key] = value
    return parser


def execute(run_dir: str | os.PathLike[str]) -> None:
    """Train and evaluate the run described by ``run_dir/run.json``; write ``finished.json`` when both are done."""
    run_dir = Path(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    start = time.perf_counter()
    train_override = {**run["overrides"], **run["train_overrides"]}
    if run.get("train_processes", 1) > 1:
        parser = _torchrun_training(run, run_dir, train_override)
        epochs = int(parser.get_parsed_content("epochs"))
    else:
        parser = _workflow(run, run["train"], run_dir, train_override).parser
        epochs = parser.get_parsed_content("train#trainer").state.epoch
    trained = time.perf_counter()
    parameters = sum(p.numel() for p in parser.get_parsed_content("network_def").parameters())
    _workflow(run, run["evaluate"], run_dir, {**run["overrides"], **run.get("evaluate_overrides", {})})
    (run_dir / "finished.json").write_text(json.dumps({
        "hash": run["hash"], "parameters": parameters, "epochs": epochs, "train_s": round(trained - start, 1),
        "evaluate_s": round(time.perf_counter() - trained, 1)}, indent=2))


def _command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "common.experiments.runs", str(run_dir)]


def _child(run_dir: str) -> int:
    """Run ``execute`` in a child process with its output in ``log.txt`` (also the body of a Ray task)."""
    with open(Path(run_dir) / "log.txt", "a") as log:
        return subprocess.call(_command(Path(run_dir)), stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT))


def _epoch(run_dir: Path) -> str:
    """The current run's last logged epoch, e.g. ``epoch 3/10``, read from the tail of its log."""
    log = run_dir / "log.txt"
    if not log.is_file():
        return "starting"
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - 4096))
        found = _EPOCH.findall(f.read().decode(errors="replace"))
    return f"epoch {found[-1][0]}/{found[-1][1]}" if found else "starting"


def _failure(run_dir: Path, rc: int) -> str:
    log = run_dir / "log.txt"
    tail = log.read_text(errors="replace").splitlines()[-5:] if log.is_file() else []
    return f"{run_dir} (exit {rc}): " + " | ".join(line.strip() for line in tail)


class _Progress:
    """Prints ``[name] done/total done, running: run (epoch e/n), ...`` whenever that line changes."""

    def __init__(self, name: str, root: Path, total: int, done: int, echo: Callable[[str], None]) -> None:
        self.name, self.root, self.total, self.done, self.echo, self.last = name, root, total, done, echo, ""

    def show(self, running: Sequence[Path]) -> None:
        line = f"[{self.name}] {self.done}/{self.total} runs done, {self.total - self.done} left"
        if running:
            line += "; running: " + ", ".join(f"{d.relative_to(self.root)} ({_epoch(d)})" for d in running)
        if line != self.last:
            self.echo(line)
            self.last = line


def _run_local(todo: list[Path], jobs: int, progress: _Progress, poll_s: float) -> list[str]:
    failures, pending, running = [], list(todo), {}
    while pending or running:
        while pending and len(running) < jobs:
            d = pending.pop(0)
            log = open(d / "log.txt", "a")
            running[d] = (subprocess.Popen(_command(d), stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT)), log)
        for d, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[d]
                progress.done += 1
                if proc.returncode != 0:
                    failures.append(_failure(d, proc.returncode))
        progress.show(list(running))
        if running:
            time.sleep(poll_s)
    return failures


def _run_ray(todo: list[tuple[Path, Run]], address: str | None, progress: _Progress, poll_s: float) -> list[str]:
    try:
        import ray
    except ImportError as exc:
        raise InvalidInputError("executor 'ray' needs Ray: pip install -c requirements/constraints.txt -e .[ray]") \
            from exc
    started_here = not ray.is_initialized()
    if started_here:
        if address in (None, "local"):  # a local instance sized for this machine: no dashboard, small object store
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, object_store_memory=100 * 1024**2,
                     log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        task = ray.remote(_child)
        refs = {task.options(num_cpus=r.cpus, num_gpus=r.gpus).remote(str(d)): d for d, r in todo}
        failures = []
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=poll_s)
            for ref in ready:
                d = refs.pop(ref)
                progress.done += 1
                rc = ray.get(ref)
                if rc != 0:
                    failures.append(_failure(d, rc))
            progress.show([d for d in refs.values() if (d / "log.txt").is_file()])
        return failures
    finally:
        if started_here:
            ray.shutdown()


def run_all(runs: Sequence[Run], out: str | os.PathLike[str], name: str = "experiment", jobs: int = 1,
            executor: str = "local", address: str | None = None, echo: Callable[[str], None] = print,
            poll_s: float = 2.0) -> dict[str, Path]:
    """Run every run not finished yet; return ``{run name: run dir}`` of the finished ones.

    Failed runs are reported in one ``RuntimeError`` after all others have run (their directories stay, so a
    rerun resumes them).
    """
    if executor not in EXECUTORS:
        raise InvalidInputError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}.")
    if jobs < 1:
        raise InvalidInputError(f"jobs must be at least 1, got {jobs}.")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise InvalidInputError("two runs of the experiment have the same name.")
    root = Path(out)
    prepared = [(r, *prepare(r, root)) for r in runs]
    todo = [(d, r) for r, d, st in prepared if st != "finished"]
    resumed = sum(st == "interrupted" for _, _, st in prepared)
    changed = sum(st == "changed" for _, _, st in prepared)
    progress = _Progress(name, root / "runs", len(runs), len(runs) - len(todo), echo)
    echo(f"[{name}] {len(runs)} runs: {len(runs) - len(todo)} finished before, {resumed} to resume, "
         f"{len(todo) - resumed} to start" + (f" ({changed} again: their config changed)" if changed else ""))
    if executor == "ray":
        failures = _run_ray(todo, address, progress, poll_s)
    else:
        failures = _run_local([d for d, _ in todo], jobs, progress, poll_s)
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(runs)} runs failed (rerun to resume them):\n" +
                           "\n".join(failures))
    return {r.name: d for r, d, _ in prepared}


if __name__ == "__main__":
    execute(sys.argv[1])
