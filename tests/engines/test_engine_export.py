"""ONNX (MONAI onnx_export) and OpenVINO IR exports of a bundle network: same outputs as torch, dynamic axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
import torch

from common.engines.export import checkpoint_key, dynamic_axes, export_onnx, export_openvino
from common.engines.runtime import OnnxRuntimeNetwork, OpenVINONetwork

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UNET2D = {"arch": "unet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3, "init_filters": 4, "depth": 2,
          "pocket": True}
CLASSIFIER = {"arch": "classifier", "spatial_dims": 2, "in_channels": 1, "out_channels": 3, "init_filters": 4,
              "depth": 2, "pocket": True}


def assert_engines_match_torch(net: torch.nn.Module, onnx_file: Path, xml: Path, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = net(x)
    for engine in (OnnxRuntimeNetwork(onnx_file, 1), OpenVINONetwork(xml, 1)):
        out = engine(x)
        assert out.shape == expected.shape, engine.engine
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4, msg=engine.engine)


def test_3d_export_matches_torch_on_another_shape_and_batch(unet3d_exports: dict[str, Any]) -> None:
    # traced on [1, 1, 8, 8, 8]; run on batch 2 and an anisotropic size the trace never saw
    x = torch.randn(2, 1, 12, 8, 16)
    assert_engines_match_torch(unet3d_exports["net"], unet3d_exports["onnx"], unet3d_exports["xml"], x)


def test_3d_export_has_free_batch_and_spatial_axes(unet3d_exports: dict[str, Any]) -> None:
    graph = onnx.load(str(unet3d_exports["onnx"])).graph
    for value in (graph.input[0], graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert len(dims) == 5
        assert dims[1].dim_value in (1, 2)  # channels stay fixed
        assert all(d.dim_param and not d.dim_value for i, d in enumerate(dims) if i != 1), value.name
    assert [graph.input[0].name, graph.output[0].name] == ["image", "pred"]


@pytest.mark.parametrize(
    ("kwargs", "traced", "x_shape", "out_shape", "wrap"),
    [
        # a bare state dict (key_in_ckpt None) for the 2D U-Net, {"model": sd} for the classifier
        (UNET2D, [1, 1, 16, 16], [2, 1, 24, 8], [2, 3, 24, 8], False),
        (CLASSIFIER, [1, 1, 32, 32], [2, 1, 48, 40], [2, 3], True),
    ],
    ids=["unet2d", "classifier"],
)
def test_2d_exports_match_torch(tmp_path: Path, saved_bundle: Any, kwargs: dict[str, Any], traced: list[int],
                                x_shape: list[int], out_shape: list[int], wrap: bool) -> None:
    net, config, ckpt = saved_bundle(tmp_path, kwargs, wrap=wrap, seed=1)
    onnx_file = export_onnx(str(config), ckpt, tmp_path / "out" / "model.onnx", traced, len(out_shape))
    assert onnx_file.is_file()
    xml = export_openvino(onnx_file, tmp_path / "out" / "model.xml")
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    x = torch.randn(*x_shape)
    with torch.no_grad():
        assert list(net(x).shape) == out_shape
    assert_engines_match_torch(net, onnx_file, xml, x)


def test_export_uses_the_checkpoint_weights_not_a_fresh_init(tmp_path: Path, saved_bundle: Any,
                                                             unet3d_exports: dict[str, Any]) -> None:
    # the session export was made from seed 0's weights: a network of other weights gives other outputs
    other, _, _ = saved_bundle(tmp_path, unet3d_exports["kwargs"], seed=5)
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(other(x), OnnxRuntimeNetwork(unet3d_exports["onnx"], 1)(x), atol=1e-3)


@pytest.mark.parametrize("wrap", [True, False], ids=["model_key", "bare_state_dict"])
def test_checkpoint_key_of_both_checkpoint_formats(tmp_path: Path, wrap: bool) -> None:
    sd = torch.nn.Conv2d(1, 2, 3).state_dict()
    ckpt = tmp_path / "model.pt"
    torch.save({"model": sd, "optimizer": {"state": {}}} if wrap else sd, ckpt)
    assert checkpoint_key(ckpt) == ("model" if wrap else None)


def test_dynamic_axes_name_batch_and_every_spatial_axis() -> None:
    axes = dynamic_axes(5, 2)
    assert axes["image"] == {0: "batch", 2: "in0", 3: "in1", 4: "in2"}
    assert axes["pred"] == {0: "batch"}
