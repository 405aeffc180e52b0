"""How far along a training, an evaluation or an inference is, and when it will end.

On a terminal, ignite's ``ProgressBar`` (tqdm) draws the current epoch or pass with its ETA. Not on a terminal (CI,
``nohup``, a log file), a bar would be a wall of carriage returns, so only whole units are logged: one line per
epoch for a training, one line per case for an evaluation or an inference, each with the time per unit and the
ETA of the whole run. Per-iteration loss lines of MONAI's ``StatsHandler`` are kept for DEBUG logging
(``"iteration_log": "$common.training.progress.at_debug"``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["ProgressHandler", "at_debug", "duration", "on_terminal", "progress"]

logger = logging.getLogger(__name__)


def on_terminal() -> bool:
    """Whether progress bars can redraw in place (tqdm writes to stderr)."""
    return sys.stderr.isatty()


def at_debug(engine: Engine | None = None, event: Any = None) -> bool:
    """An ignite event filter: true only when the root logger shows DEBUG records (per-iteration lines)."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def duration(seconds: float) -> str:
    """``1:02:03`` / ``2:03`` / ``4.2 s``: short enough for a progress line."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress(items: Iterable[Any], desc: str, log: logging.Logger = logger, min_items: int = 20,
             every: float = 0.1) -> Iterator[Any]:
    """``items`` one by one with progress for long loops: a tqdm bar on a terminal, else a log line every
    ``every`` of the way (from ``min_items`` items on; short loops stay silent)."""
    total = len(items) if isinstance(items, Sized) else None
    if total is None or total < min_items:
        yield from items
        return
    if on_terminal():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, unit="case", leave=False)
        return
    start, step = time.perf_counter(), max(1, int(total * every))
    for i, item in enumerate(items, 1):
        yield item
        if i % step == 0 and i < total:
            elapsed = time.perf_counter() - start
            log.info(f"{desc}: {i}/{total}, ETA {duration(elapsed / i * (total - i))}")


class ProgressHandler:
    """Progress of an ignite engine: a bar on a terminal, one log line per epoch or per case otherwise.

    Args:
        unit: ``"epoch"`` for a trainer (a line per epoch, with the mean of ``output_transform`` over the epoch
            as ``loss``), ``"case"`` for an evaluator or an inference (a line per iteration, i.e. per case with
            batch size 1, naming the case's file).
        output_transform: the training loss from ``engine.state.output`` (``unit="epoch"``).
        terminal: draw a bar (default: when stderr is a terminal).
        name: the logger the lines go to.
        total: the number of cases, for a data loader whose length ignite does not know until the end (an
            inference that leaves out unreadable images); default: the engine's ``epoch_length``.
        time_budget: a training's ``TimeBudget``: with a budget the run ends when it is spent, which the ETA
            then says instead of the (nominal) epochs left.
    """

    def __init__(self, unit: str = "epoch", output_transform: Callable[[Any], Any] | None = None,
                 terminal: bool | None = None, name: str = __name__, total: int | None = None,
                 time_budget: Any = None) -> None:
        if unit not in ("epoch", "case"):
            raise ValueError(f"unit must be 'epoch' or 'case', got {unit!r}.")
        self.unit = unit
        self.output_transform = output_transform
        self.terminal = on_terminal() if terminal is None else terminal
        self.logger = logging.getLogger(name)
        self.total = total
        self.time_budget = time_budget
        self._start = self._epoch_start = 0.0
        self._first_epoch = 0
        self._losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        if self.terminal:
            from ignite.handlers import ProgressBar

            bar = ProgressBar(persist=False, desc="epoch" if self.unit == "epoch" else "cases")
            transform = self.output_transform if self.unit == "epoch" else None
            bar.attach(engine, output_transform=(lambda out: {"loss": _scalar(transform(out))}) if transform else None)
        engine.add_event_handler(Events.STARTED, self._started)
        if self.unit == "epoch":
            engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect_loss)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_line)
        else:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._case_line)

    def _started(self, engine: Engine) -> None:
        self._start = time.perf_counter()
        self._first_epoch = engine.state.epoch  # a resumed run counts its ETA from where it resumed

    def _epoch_started(self, engine: Engine) -> None:
        self._epoch_start = time.perf_counter()
        self._losses = []

    def _collect_loss(self, engine: Engine) -> None:
        if self.output_transform is not None:
            value = _scalar(self.output_transform(engine.state.output))
            if value is not None:
                self._losses.append(value)

    def _epoch_line(self, engine: Engine) -> None:
        now, state = time.perf_counter(), engine.state
        done = state.epoch - self._first_epoch
        per_epoch = (now - self._start) / max(done, 1)
        left = (state.max_epochs or state.epoch) - state.epoch
        loss = f", loss {sum(self._losses) / len(self._losses):.4f}" if self._losses else ""
        eta, budget = left * per_epoch, getattr(self.time_budget, "budget_s", None)
        if budget:
            eta = min(eta, max(0.0, budget - self.time_budget.elapsed_s()))
        self.logger.info(f"epoch {state.epoch}/{state.max_epochs}{loss}, {duration(now - self._epoch_start)} "
                         f"this epoch, elapsed {duration(now - self._start)}, ETA {duration(eta)}")

    def _case_line(self, engine: Engine) -> None:
        now, state = time.perf_counter(), engine.state
        total = state.epoch_length or self.total or state.iteration
        done = (state.iteration - 1) % (state.epoch_length or state.iteration) + 1
        per_case = (now - self._start) / done
        names = _case_names(state.batch)
        self.logger.info(f"case {done}/{total}{' ' + names if names else ''}, {per_case:.1f} s per case, "
                         f"ETA {duration((total - done) * per_case)}")


def _scalar(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _case_names(batch: Any) -> str:
    """The file names of a batch's images (MetaTensor ``filename_or_obj``), as a short list."""
    import os

    items = batch if isinstance(batch, list) else [batch]
    names = []
    for item in items:
        image = item.get("image") if isinstance(item, dict) else None
        meta = getattr(image, "meta", None) or {}
        name = meta.get("filename_or_obj")
        if isinstance(name, (list, tuple)):
            name = name[0] if name else None
        if name:
            names.append(os.path.basename(str(name)))
    return ", ".join(names)
