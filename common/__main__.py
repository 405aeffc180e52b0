"""The collection's one command line: ``python -m common <command> ...``, also installed as ``pocket <command>``.

Every command is a plain function of the package (fire turns its typed keyword arguments into ``--flags``);
``pocket --help`` lists them and ``pocket <command> --help`` shows one. A command that returns text prints it,
one that returns an integer exits with it. A bad input (a missing file, a wrong name, an invalid value) ends the
command with its one-sentence message on stderr and exit status 1, without a traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import fire

from common.benchmarks.complexity import complexity
from common.benchmarks.cpu_options import cpu_options
from common.benchmarks.engines import engine_benchmark
from common.benchmarks.memory import memory
from common.benchmarks.profile import profile
from common.data.datacheck import DataCheckError, datacheck
from common.data.fingerprint import fingerprint
from common.datasets import build_datalist, write_lookalike
from common.datasets.brats import stack
from common.demo import demo
from common.engines.choose import engines
from common.experiments import activations, depth_ablation, full_vs_pocket, saturation, time_to_accuracy
from common.experiments import cascade as cascade_experiment
from common.experiments import lowres as lowres_experiment
from common.monailabel.server import monailabel

#: What a command raises for bad input: reported as one sentence, not as a traceback.
USER_ERRORS = (DataCheckError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``fn`` for the command line: print returned text, exit with a returned int, report bad input."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            result = fn(*args, **kwargs)
        except USER_ERRORS as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        if isinstance(result, bool) or result is None:
            return
        if isinstance(result, int):
            sys.exit(result)
        if isinstance(result, str):
            print(result)

    return run


class Group:
    """Commands under one name (``pocket experiment cascade``); fire shows ``doc`` beside the name."""

    def __init__(self, doc: str, **commands: Callable[..., Any]) -> None:
        self.__doc__ = doc
        for name, fn in commands.items():
            setattr(self, name, fn)

    def commands(self) -> dict[str, Callable[..., Any]]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


COMMANDS: dict[str, Any] = {
    "demo": command(demo),
    "lookalike": command(write_lookalike),
    "datalist": command(build_datalist),
    "brats_stack": command(stack),
    "datacheck": command(datacheck),
    "fingerprint": command(fingerprint),
    "profile": command(profile),
    "memory": command(memory),
    "complexity": command(complexity),
    "cpu_options": command(cpu_options),
    "engines": command(engines),
    "engine_benchmark": command(engine_benchmark),
    "monailabel": command(monailabel),
    "experiment": Group(
        "The papers' experiments, on your data or look-alike data: table1 (full vs pocket, k-fold, Wilcoxon), "
        "ablation (doubling up to level L), activations (mean activation per channel of table1's models), "
        "saturation (test scores against the share of training data), "
        "cascade (whole vs slab-wise vs cascade), lowres (up-scaling head vs plain network), time_to_accuracy "
        "(validation Dice against training time per CPU recipe).",
        table1=command(full_vs_pocket.run),
        ablation=command(depth_ablation.run),
        activations=command(activations.run),
        saturation=command(saturation.run),
        cascade=command(cascade_experiment.run),
        lowres=command(lowres_experiment.run),
        time_to_accuracy=command(time_to_accuracy.run),
    ),
}


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m common`` and of the ``pocket`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv and ("--help" in argv or "-h" in argv):
        # fire would hand --help to a command's **override as a config key; after "--" it is fire's own flag
        argv = [a for a in argv if a not in ("--help", "-h")] + ["--", "--help"]
    fire.Fire(COMMANDS, command=argv, name="pocket")


if __name__ == "__main__":
    main()
