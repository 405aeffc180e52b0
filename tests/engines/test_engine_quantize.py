"""NNCF INT8 quantization of the OpenVINO IR, and the recorder that collects its calibration inputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from common.engines.quantize import CalibrationRecorder, quantize_openvino, quantized_operations
from common.engines.runtime import OpenVINONetwork, load_engine

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_int8_ir_runs_its_convolutions_in_int8_and_stays_close(unet3d_exports: dict[str, Any],
                                                               engine_dir: Callable[..., Path]) -> None:
    folder = engine_dir("openvino_int8")
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((1, 1, 16, 16, 16), dtype=np.float32) for _ in range(4)]
    int8_xml = quantize_openvino(folder / "model.xml", samples, folder / "model_int8.xml")
    assert int8_xml == folder / "model_int8.xml" and int8_xml.with_suffix(".bin").is_file()

    int8_ops = quantized_operations(int8_xml)
    fp32_ops = quantized_operations(folder / "model.xml")
    assert int8_ops["int8"] > 0
    assert fp32_ops["int8"] == 0 and fp32_ops["float"] > 0  # the count can tell an fp32 model apart
    assert int8_ops["int8"] + int8_ops["float"] == fp32_ops["float"]  # same convolutions, other precision

    # the record's choice reaches inference: load_engine runs the INT8 IR
    net = load_engine(unet3d_exports["net"], folder, "auto", num_threads=1)
    assert isinstance(net, OpenVINONetwork) and net.engine == "openvino_int8"
    x = torch.randn(1, 1, 16, 12, 8)
    with torch.no_grad():
        expected = unet3d_exports["net"](x)
    out = net(x)
    assert out.shape == expected.shape
    assert (out - expected).abs().max() < 0.1 * expected.abs().max()  # loose: INT8 rounding
    assert np.corrcoef(out.flatten().numpy(), expected.flatten().numpy())[0, 1] > 0.99


def test_quantize_without_calibration_inputs_is_an_error(unet3d_exports: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration"):
        quantize_openvino(unet3d_exports["xml"], [], tmp_path / "model_int8.xml")


class CountingNet(nn.Module):
    """A 1x1x1 convolution that counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x)


def numbered(batch: int, start: int, side: int) -> torch.Tensor:
    """A batch whose sample i is filled with the value start + i (so a kept sample tells which input it was)."""
    values = torch.arange(start, start + batch, dtype=torch.float32)
    return values.view(-1, 1, 1, 1, 1).expand(batch, 1, side, side, side).contiguous()


def test_recorder_keeps_at_most_max_samples_single_inputs() -> None:
    net = CountingNet()
    recorder = CalibrationRecorder(net, max_samples=5, seed=0)
    batches = [numbered(3, 3 * i, 8) for i in range(4)] + [numbered(2, 12 + 2 * i, 4) for i in range(2)]
    for x in batches:
        out = recorder(x)
        assert out.shape == (x.shape[0], 2, *x.shape[2:])
    assert recorder.seen == 16
    assert len(recorder.samples) == 5
    kept = []
    for sample in recorder.samples:
        assert isinstance(sample, np.ndarray) and sample.dtype == np.float32 and sample.flags.c_contiguous
        assert sample.shape[:2] == (1, 1) and sample.ndim == 5
        value = float(sample.flat[0])
        assert np.all(sample == value) and 0 <= value < 16
        kept.append(value)
    assert len(set(kept)) == 5  # distinct inputs, not one repeated
    assert net.calls == 2  # once per distinct input shape, not once per window


def test_recorder_keeps_every_input_while_under_max_samples() -> None:
    net = CountingNet()
    recorder = CalibrationRecorder(net, max_samples=64)
    x = torch.randn(3, 1, 4, 4, 4)
    with torch.no_grad():
        expected = net.conv(x)
    out = recorder(x)
    torch.testing.assert_close(out, expected)
    assert [s.shape for s in recorder.samples] == [(1, 1, 4, 4, 4)] * 3
    for i, sample in enumerate(recorder.samples):
        np.testing.assert_array_equal(sample, x[i : i + 1].numpy())
    out.zero_()  # the returned tensor is a copy: the next call of that shape is unaffected
    assert recorder(torch.randn(3, 1, 4, 4, 4)).abs().sum() > 0
    assert recorder.seen == 6 and net.calls == 1


def test_recorder_sampling_reaches_late_inputs() -> None:
    # reservoir sampling: with 4 kept out of 40, the kept samples are not simply the first 4
    recorder = CalibrationRecorder(CountingNet(), max_samples=4, seed=1)
    for i in range(20):
        recorder(numbered(2, 2 * i, 2))
    values = sorted(float(s.flat[0]) for s in recorder.samples)
    assert recorder.seen == 40 and len(values) == 4
    assert values != [0.0, 1.0, 2.0, 3.0] and max(values) >= 4
