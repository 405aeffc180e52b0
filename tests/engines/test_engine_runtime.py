"""load_engine: the recorded engine when its export is fresh and its runtime installed, torch otherwise."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer

from common.engines import runtime
from common.engines.record import file_sha256, read_record
from common.engines.runtime import (
    OnnxRuntimeNetwork,
    OpenVINONetwork,
    engine_unavailable,
    is_fresh,
    load_engine,
)
from common.training.cpu import auto_threads

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOGGER = "common.engines.runtime"


@pytest.fixture
def torch_net(unet3d_exports: dict[str, Any]) -> torch.nn.Module:
    """The bundle's torch network as load_engine receives it (a fresh module, so attributes set stay local)."""
    from common.networks import get_network

    net = get_network(**unet3d_exports["kwargs"]).eval()
    net.load_state_dict(unet3d_exports["net"].state_dict())
    return net


def messages(caplog: pytest.LogCaptureFixture, level: int | None = None) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and (level is None or r.levelno == level)]


def test_no_record_runs_torch_and_says_so_in_one_line(torch_net: torch.nn.Module, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert load_engine(torch_net, tmp_path, "auto", num_threads=1) is torch_net
    lines = messages(caplog)
    assert len(lines) == 1 and "torch" in lines[0] and "engine.json" in lines[0]
    assert not hasattr(torch_net, "bytes_per_voxel")


@pytest.mark.parametrize(("engine", "cls"), [("openvino", OpenVINONetwork), ("onnxruntime", OnnxRuntimeNetwork)])
def test_fresh_record_runs_the_recorded_engine(torch_net: torch.nn.Module, engine_dir: Callable[..., Path],
                                               engine: str, cls: type, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    folder = engine_dir(engine, bytes_per_voxel={"torch": 300.0, engine: 123.0})
    net = load_engine(torch_net, folder, "auto", num_threads=1)
    assert type(net) is cls and net.engine == engine
    assert net.multiple == [4, 4, 4] and net.bytes_per_voxel == 123.0  # what BudgetedInferer reads
    assert any(engine in m for m in messages(caplog, logging.INFO))
    x = torch.randn(2, 1, 12, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), torch_net(x), atol=1e-4, rtol=1e-4)


def test_an_asked_engine_overrides_the_recorded_one(torch_net: torch.nn.Module,
                                                    engine_dir: Callable[..., Path]) -> None:
    folder = engine_dir("openvino")
    assert type(load_engine(torch_net, folder, "onnxruntime", num_threads=1)) is OnnxRuntimeNetwork
    assert load_engine(torch_net, folder, "torch", num_threads=1) is torch_net


def test_engine_runs_inside_monai_sliding_window_on_meta_tensors(unet3d_exports: dict[str, Any]) -> None:
    net = OpenVINONetwork(unet3d_exports["xml"], 1)
    x = MetaTensor(torch.randn(1, 1, 14, 10, 9))
    inferer = SlidingWindowInferer([8, 8, 8], sw_batch_size=2, overlap=0.25)
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(inferer(x, net)), torch.as_tensor(inferer(x, unet3d_exports["net"])),
                                   atol=1e-4, rtol=1e-4)


def test_engine_output_is_float32_on_the_input_device(unet3d_exports: dict[str, Any]) -> None:
    net = OnnxRuntimeNetwork(unet3d_exports["onnx"], 1)
    x = torch.randn(1, 1, 8, 8, 8, dtype=torch.float64)
    out = net(x)
    assert out.dtype == torch.float32 and out.device == x.device
    with torch.no_grad():
        torch.testing.assert_close(out, unet3d_exports["net"](x.float()), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("num_threads", [1, 2])
def test_engine_threads_follow_num_threads(unet3d_exports: dict[str, Any], num_threads: int) -> None:
    ov = OpenVINONetwork(unet3d_exports["xml"], num_threads)
    assert ov.num_threads == num_threads
    assert int(ov.compiled.get_property("INFERENCE_NUM_THREADS")) == num_threads
    ort = OnnxRuntimeNetwork(unet3d_exports["onnx"], num_threads)
    assert ort.num_threads == num_threads
    assert ort.session.get_session_options().intra_op_num_threads == num_threads
    assert f"threads={num_threads}" in repr(ov)


def test_auto_threads_leave_busy_cores_out(unet3d_exports: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "auto_threads", lambda: 1)
    assert OnnxRuntimeNetwork(unet3d_exports["onnx"], "auto").num_threads == 1
    assert runtime.threads(None) == 1 and runtime.threads("3") == 3 and runtime.threads(0) == 1
    monkeypatch.undo()
    assert runtime.threads("auto") == auto_threads()


@pytest.mark.parametrize("engine", ["auto", "openvino"])
def test_export_older_than_the_checkpoint_runs_torch_with_a_warning(
        torch_net: torch.nn.Module, engine_dir: Callable[..., Path], saved_bundle: Any, unet3d_exports: dict[str, Any],
        tmp_path: Path, engine: str, caplog: pytest.LogCaptureFixture) -> None:
    folder = engine_dir("openvino", bytes_per_voxel={"torch": 300.0, "openvino": 123.0})
    before = file_sha256(folder / "model.pt")
    saved_bundle(folder, unet3d_exports["kwargs"], seed=7)  # retrained: other bytes in model.pt
    assert file_sha256(folder / "model.pt") != before
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert load_engine(torch_net, folder, engine, num_threads=1) is torch_net
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1 and "older" in warnings[0] and "openvino" in warnings[0]


def test_stale_record_gives_torch_no_memory_measurement(torch_net: torch.nn.Module,
                                                        engine_dir: Callable[..., Path]) -> None:
    folder = engine_dir("torch", bytes_per_voxel={"torch": 300.0})
    assert load_engine(torch_net, folder, "auto", num_threads=1) is torch_net
    assert torch_net.bytes_per_voxel == 300.0  # fresh: the measured memory per voxel reaches the inferer
    del torch_net.bytes_per_voxel
    (folder / "model.pt").write_bytes((folder / "model.pt").read_bytes() + b"\0")
    assert load_engine(torch_net, folder, "auto", num_threads=1) is torch_net
    assert not hasattr(torch_net, "bytes_per_voxel")


@pytest.mark.parametrize(("engine", "package"), [("onnxruntime", "onnxruntime"), ("openvino", "openvino"),
                                                 ("openvino_int8", "openvino")])
def test_missing_runtime_package_runs_torch_with_a_warning(
        torch_net: torch.nn.Module, engine_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, engine: str,
        package: str, caplog: pytest.LogCaptureFixture) -> None:
    folder = engine_dir(engine)
    find_spec = runtime.importlib.util.find_spec
    monkeypatch.setattr(runtime.importlib.util, "find_spec",
                        lambda name, *args: None if name == package else find_spec(name, *args))
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert load_engine(torch_net, folder, "auto", num_threads=1) is torch_net
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1 and "not installed" in warnings[0] and package in warnings[0]


def test_missing_export_runs_torch_with_a_warning(torch_net: torch.nn.Module, engine_dir: Callable[..., Path],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    folder = engine_dir("openvino")
    caplog.set_level(logging.INFO, logger=LOGGER)
    assert load_engine(torch_net, folder, "openvino_int8", num_threads=1) is torch_net  # never quantized
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1 and "model_int8.xml" in warnings[0] and "does not exist" in warnings[0]


def test_unknown_engine_is_an_error(torch_net: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tensorrt"):
        load_engine(torch_net, tmp_path, "tensorrt")


@pytest.mark.parametrize("engine", ["auto", "openvino", "onnxruntime"])
@pytest.mark.parametrize("device", ["cuda:0", torch.device("cuda", 0)])
def test_gpu_device_runs_torch(torch_net: torch.nn.Module, engine_dir: Callable[..., Path], engine: str,
                               device: Any) -> None:
    folder = engine_dir("openvino")
    assert load_engine(torch_net, folder, engine, num_threads=1, device=device) is torch_net


def test_freshness_and_unavailability(engine_dir: Callable[..., Path], tmp_path: Path) -> None:
    folder = engine_dir("openvino")
    record = read_record(folder)
    assert is_fresh(record, folder / "model.pt")
    assert not is_fresh(None, folder / "model.pt")
    assert is_fresh(record, tmp_path / "no_checkpoint.pt")  # nothing to check against
    assert not is_fresh({**record, "model_sha256": "0" * 64}, folder / "model.pt")
    assert engine_unavailable("openvino", folder, record) is None
    assert engine_unavailable("onnxruntime", folder, record) is None
    assert "does not exist" in engine_unavailable("openvino", folder, None)


def test_openvino_models_share_one_core_and_torch_runs_after_they_are_freed(unet3d_exports: dict[str, Any]) -> None:
    """Freeing every compiled model must not unload the CPU plugin (that crashed later torch work)."""
    import gc

    first = OpenVINONetwork(unet3d_exports["xml"], 1)
    core = runtime.openvino_core()
    assert runtime.openvino_core() is core
    x = torch.randn(1, 1, 16, 16, 16)
    expected = first(x)
    del first
    gc.collect()
    with torch.no_grad():
        torch.testing.assert_close(unet3d_exports["net"](x), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(OpenVINONetwork(unet3d_exports["xml"], 1)(x), expected)


def test_forked_child_never_collects_what_it_inherited(unet3d_exports: dict[str, Any]) -> None:
    """A DataLoader worker forked after OpenVINO models exist does not free them (it has not their threads)."""
    import os

    OpenVINONetwork(unet3d_exports["xml"], 1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report how many objects the collector left out, and leave at once
        os.write(write, str(__import__("gc").get_freeze_count()).encode())
        os._exit(0)
    os.close(write)
    frozen = int(os.read(read, 64) or b"0")
    os.waitpid(pid, 0)
    assert frozen > 1000
