"""Run a bundle's network through ONNX Runtime or OpenVINO, as a drop-in for the torch network.

MONAI's inferers and engines only call ``network(x)``, so an engine is a small ``nn.Module`` that hands the
tensor to the runtime and returns a tensor: the bundle's transforms, inferer, inversion, post-processing and
writer stay as they are. One compiled model serves every input shape (the exports have dynamic batch and
spatial axes), and it uses the bundle's ``cpu_threads``.

``load_engine`` is what the configs call: it returns the torch network itself when torch is asked for, when the
device is a GPU (there MONAI's ``trt_export`` is the fast route), or when the asked engine cannot be used (no
export, an export made from another ``model.pt``, a runtime package not installed), in which case one log line
says why.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import convert_to_numpy
from torch import nn

from common.engines.record import ENGINES, EXPORT_FILES, file_sha256, read_record
from common.errors import InvalidInputError
from common.training.cpu import auto_threads

__all__ = ["EngineNetwork", "OnnxRuntimeNetwork", "OpenVINONetwork", "engine_unavailable", "is_fresh", "load_engine",
           "openvino_core", "threads"]

logger = logging.getLogger(__name__)

#: the Python package each engine needs (the ``cpu`` extra installs them)
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "openvino_int8": "openvino"}


def threads(num_threads: int | str | None) -> int:
    """The bundle's ``cpu_threads`` as a number: ``"auto"``/``None`` leave out the cores other jobs keep busy."""
    if num_threads in (None, "auto"):
        return auto_threads()
    return max(1, int(num_threads))


class EngineNetwork(nn.Module):
    """A network whose forward runs in another runtime: torch tensor in, torch tensor out (fp32, same device).

    ``multiple`` (what every spatial size must be a multiple of) and ``bytes_per_voxel`` (measured peak memory
    per input voxel) come from the engine record; ``BudgetedInferer`` uses them to pass whole volumes.
    """

    engine = ""

    def __init__(self, path: str | Path, num_threads: int | str | None = "auto", multiple: list[int] | None = None,
                 bytes_per_voxel: float | None = None) -> None:
        super().__init__()
        self.path = str(path)
        self.num_threads = threads(num_threads)
        if multiple is not None:  # absent rather than None, as on a torch network without one (inferers pad to it)
            self.multiple = multiple
        self.bytes_per_voxel = bytes_per_voxel

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(convert_to_numpy(x, dtype=np.float32))
        return torch.from_numpy(self.run(array)).to(x.device)

    def extra_repr(self) -> str:
        return f"engine={self.engine}, path={self.path}, threads={self.num_threads}"


class OnnxRuntimeNetwork(EngineNetwork):
    """The ONNX export on ONNX Runtime's CPU execution provider."""

    engine = "onnxruntime"

    def __init__(self, path: str | Path, num_threads: int | str | None = "auto", **kwargs: Any) -> None:
        super().__init__(path, num_threads, **kwargs)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.num_threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


_child_freezes_inherited_objects = False


def openvino_core() -> Any:
    """The process's one OpenVINO ``Core``, kept for the life of the process.

    A temporary ``Core()`` per model lets the CPU plugin library be unloaded when the last model compiled with it
    is garbage-collected, and what the plugin left behind (thread-local state of its thread pool) may then point
    into unmapped code: the likely cause of the segfaults seen later in torch runs of the same process (with one
    Core the whole test suite runs in one process again; before, it crashed). One Core keeps the plugin loaded.
    """
    global _core
    if _core is None:
        import openvino

        _core = openvino.Core()
        _freeze_inherited_objects_in_children()
    return _core


_core = None


def _freeze_inherited_objects_in_children() -> None:
    """In a forked child (a DataLoader worker), never garbage-collect what the parent had.

    A child inherits the compiled OpenVINO models but not the CPU plugin's threads: if its collector freed one
    the parent had dropped (a finished workflow's network stays in reference cycles until collected), the child
    would wait on those threads for ever ("DataLoader worker exited unexpectedly"). ``gc.freeze`` right after the
    fork moves every inherited object out of the collector's reach; what the child creates is collected as usual.
    """
    global _child_freezes_inherited_objects
    if not _child_freezes_inherited_objects and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=gc.freeze)
        _child_freezes_inherited_objects = True


class OpenVINONetwork(EngineNetwork):
    """An OpenVINO IR (fp32, or INT8 from NNCF) compiled for the CPU with the latency hint.

    fp32 IRs are compiled with ``INFERENCE_PRECISION_HINT=f32``: OpenVINO's default on CPUs that report bf16 is
    to run in bf16, which changes the outputs (1e-3 here) without being asked to.
    """

    engine = "openvino"

    def __init__(self, path: str | Path, num_threads: int | str | None = "auto", int8: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(path, num_threads, **kwargs)
        self.engine = "openvino_int8" if int8 else "openvino"
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.num_threads}
        if not int8:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        self.compiled = openvino_core().compile_model(self.path, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x})
        return self.request.get_output_tensor(0).data.copy()


def is_fresh(record: dict[str, Any] | None, checkpoint: Path) -> bool:
    """Whether ``record`` was made from ``checkpoint`` as it is now (same SHA-256; no checkpoint: nothing to check)."""
    if record is None:
        return False
    return not checkpoint.is_file() or record.get("model_sha256") == file_sha256(checkpoint)


def engine_unavailable(engine: str, ckpt_dir: str | Path, record: dict[str, Any] | None,
                       checkpoint: str = "model.pt") -> str | None:
    """Why ``engine`` cannot run the model of ``ckpt_dir`` (a sentence), or ``None`` when it can."""
    package = PACKAGES[engine]
    if importlib.util.find_spec(package) is None:
        return f"the package {package} is not installed (pip install -c requirements/constraints.txt -e '.[cpu]')"
    ckpt_dir = Path(ckpt_dir)
    export = ckpt_dir / EXPORT_FILES[engine]
    if record is None or not export.is_file():
        return f"{export} does not exist (pocket engines exports it after training)"
    if not is_fresh(record, ckpt_dir / checkpoint):
        return f"{export} was exported from an older {checkpoint} (run pocket engines again)"
    return None


def load_engine(network: nn.Module, ckpt_dir: str | Path, engine: str = "auto", num_threads: int | str | None = "auto",
                device: torch.device | str | None = None, checkpoint: str = "model.pt") -> nn.Module:
    """The network the bundle's evaluator should call: ``network`` itself or an engine running its export.

    Args:
        network: the bundle's torch network (its weights are loaded later by the ``CheckpointLoader``).
        ckpt_dir: folder of ``model.pt``, the exports and ``engine.json``.
        engine: one of ``ENGINES``, or ``"auto"``: the engine recorded in ``engine.json`` (torch when there is
            none).
        num_threads: the bundle's ``cpu_threads``.
        device: the bundle's device; on a GPU the network runs with torch.
    """
    if engine != "auto" and engine not in ENGINES:
        raise InvalidInputError(f"engine must be 'auto' or one of {', '.join(ENGINES)}, got {engine!r}.")
    if torch.device(device or "cpu").type != "cpu":
        if engine not in ("auto", "torch"):
            logger.info("engine %s runs on the CPU only; the network runs with torch on %s.", engine, device)
        return network
    record = read_record(ckpt_dir)
    if engine == "auto":
        if record is None:
            logger.info("engine: torch (no %s/engine.json yet; pocket engines chooses a faster one).", ckpt_dir)
            return network
        engine = record["chosen"]
    measured = (record or {}).get("bytes_per_voxel", {}).get(engine)
    if engine == "torch":
        if measured and is_fresh(record, Path(ckpt_dir) / checkpoint):
            network.bytes_per_voxel = measured
        return network
    problem = engine_unavailable(engine, ckpt_dir, record, checkpoint)
    if problem is not None:
        logger.warning("engine %s not used: %s; the network runs with torch.", engine, problem)
        return network
    path = Path(ckpt_dir) / EXPORT_FILES[engine]
    kwargs = {"multiple": record.get("multiple"), "bytes_per_voxel": measured}
    if engine == "onnxruntime":
        net = OnnxRuntimeNetwork(path, num_threads, **kwargs)
    else:
        net = OpenVINONetwork(path, num_threads, int8=engine == "openvino_int8", **kwargs)
    logger.info("engine: %s (%s, %d threads).", engine, path, net.num_threads)
    return net
