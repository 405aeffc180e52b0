"""Train for a wall-clock budget instead of a number of epochs, with a learning rate that decays over that time.

A laptop user thinks "overnight" or "one hour", not "300 epochs": how many epochs fit depends on the machine.
``TimeBudget`` ends training when the budget is spent, decays the learning rate polynomially (nnU-Net's
``(1 - t/T)^0.9``, with ``t/T`` the fraction of the *time* budget instead of the epochs), and can save a snapshot of
the weights every ``snapshot_minutes`` with the wall and CPU seconds spent so far (``snapshots.csv``), which the
time-to-accuracy command scores afterwards. Its state (seconds spent, snapshots taken) goes into the resume
checkpoint (``"time_budget": "@time_budget"`` in ``save_dict``/``load_dict``), so a run resumed after an
interruption carries on where its clock stopped. The time spent writing snapshots is not counted.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import psutil
import torch
from ignite.engine import Engine, Events

__all__ = ["TimeBudget", "cpu_seconds"]

SNAPSHOT_FIELDS = ["minutes", "wall_s", "cpu_s", "epoch", "iteration", "lr", "loss", "file"]


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, its finished children and its live ones (data loader workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:4])  # user, system, children_user, children_system (the finished children)
    for child in me.children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return float(total)


class TimeBudget:
    """End a training after ``minutes`` of wall time; decay the learning rate over them; take timed snapshots.

    Args:
        minutes: the budget (``None``: no limit, only snapshots).
        optimizer: whose learning rates to decay (``None``: leave them alone).
        lr_power: exponent of the polynomial decay ``lr = lr0 * (1 - t / budget) ** lr_power`` (0: constant).
        snapshot_minutes: save ``model_<M>min.pt`` every that many minutes and at the end (``None``: none).
        snapshot_dir: where snapshots and ``snapshots.csv`` go.
        network: what a snapshot saves (its ``state_dict``).
    """

    def __init__(self, minutes: float | None, optimizer: torch.optim.Optimizer | None = None, lr_power: float = 0.9,
                 snapshot_minutes: float | None = None, snapshot_dir: str | os.PathLike[str] | None = None,
                 network: torch.nn.Module | None = None) -> None:
        if minutes is not None and minutes <= 0:
            raise ValueError(f"minutes must be positive, got {minutes}.")
        if snapshot_minutes is not None and (snapshot_minutes <= 0 or network is None or snapshot_dir is None):
            raise ValueError("snapshots need a positive snapshot_minutes, a network and a snapshot_dir.")
        self.budget_s = None if minutes is None else float(minutes) * 60.0
        self.optimizer = optimizer
        self.lr_power = float(lr_power)
        self.snapshot_s = None if snapshot_minutes is None else float(snapshot_minutes) * 60.0
        self.snapshot_dir = None if snapshot_dir is None else Path(snapshot_dir)
        self.network = network
        self.carried_s = 0.0  # wall seconds of earlier runs (resume)
        self.carried_cpu_s = 0.0
        self.snapshots_taken = 0
        self._t0: float | None = None
        self._cpu0 = 0.0
        self._paused_s = 0.0  # snapshot writing, not counted
        self._base_lrs: list[float] | None = None
        self._last_loss = float("nan")

    # -- clock ------------------------------------------------------------------------------------------------
    def elapsed_s(self) -> float:
        """Wall seconds of training so far, this run and the ones it resumes."""
        if self._t0 is None:
            return self.carried_s
        return self.carried_s + time.perf_counter() - self._t0 - self._paused_s

    def elapsed_cpu_s(self) -> float:
        return self.carried_cpu_s + (cpu_seconds() - self._cpu0 if self._t0 is not None else 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed_s": self.elapsed_s(), "cpu_s": self.elapsed_cpu_s(), "snapshots_taken": self.snapshots_taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.carried_s = float(state.get("elapsed_s", 0.0))
        self.carried_cpu_s = float(state.get("cpu_s", 0.0))
        self.snapshots_taken = int(state.get("snapshots_taken", 0))
        if self._t0 is not None:  # loaded after the clock started: restart it, the loaded seconds are the past
            self._start(None)

    # -- engine -----------------------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_STARTED, self._before_iteration)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._after_iteration)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _start(self, engine: Engine | None) -> None:
        self._t0 = time.perf_counter()
        self._cpu0 = cpu_seconds()
        self._paused_s = 0.0
        if self.optimizer is not None and self._base_lrs is None:
            self._base_lrs = [float(g.get("initial_lr", g["lr"])) for g in self.optimizer.param_groups]

    def _fraction(self) -> float:
        return 0.0 if self.budget_s is None else min(self.elapsed_s() / self.budget_s, 1.0)

    def current_lr(self) -> float | None:
        if self._base_lrs is None:
            return None
        return self._base_lrs[0] * (1.0 - self._fraction()) ** self.lr_power

    def _before_iteration(self, engine: Engine) -> None:
        if self.budget_s is not None and self.elapsed_s() >= self.budget_s:
            engine.terminate()
            return
        if self.optimizer is not None and self._base_lrs is not None and self.budget_s is not None:
            scale = (1.0 - self._fraction()) ** self.lr_power
            for group, base in zip(self.optimizer.param_groups, self._base_lrs):
                group["lr"] = base * scale

    def _after_iteration(self, engine: Engine) -> None:
        output = engine.state.output
        item = output[0] if isinstance(output, list) and output else output
        if isinstance(item, dict) and "loss" in item:
            loss = item["loss"]
            self._last_loss = float(loss.item() if isinstance(loss, torch.Tensor) else loss)
        if self.snapshot_s is not None and self.elapsed_s() >= (self.snapshots_taken + 1) * self.snapshot_s:
            self._snapshot(engine, (self.snapshots_taken + 1) * self.snapshot_s / 60.0)

    def _completed(self, engine: Engine) -> None:
        """At the end of the budget (or of the epochs): a last snapshot at the time actually reached."""
        if self.snapshot_s is None:
            return
        minutes = self.elapsed_s() / 60.0
        if self.budget_s is not None and self.elapsed_s() >= self.budget_s:
            minutes = self.budget_s / 60.0
        last = self.snapshots_taken * self.snapshot_s / 60.0
        if minutes > last + 1e-6:
            self._snapshot(engine, minutes, final=True)

    def _snapshot(self, engine: Engine, minutes: float, final: bool = False) -> None:
        assert self.snapshot_dir is not None and self.network is not None
        began = time.perf_counter()
        wall, cpu = self.elapsed_s(), self.elapsed_cpu_s()
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        name = f"model_{minutes:07.2f}min.pt"
        net = getattr(self.network, "module", self.network)  # DistributedDataParallel
        torch.save(net.state_dict(), self.snapshot_dir / name)
        table = self.snapshot_dir / "snapshots.csv"
        new = not table.exists()
        with open(table, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=SNAPSHOT_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({"minutes": round(minutes, 2), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                             "epoch": engine.state.epoch, "iteration": engine.state.iteration,
                             "lr": self.current_lr(), "loss": self._last_loss, "file": name})
        if not final:
            self.snapshots_taken += 1
        self._paused_s += time.perf_counter() - began
