"""Fixtures of the engine tests: a tiny trained-looking 3D U-Net with its checkpoint, config and exports.

The exports are made once per session (ONNX export with MONAI's verification, then the OpenVINO IR), in a
folder that tests only read; a test that changes files copies them first (``engine_dir``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from common.engines.export import export_onnx, export_openvino
from common.engines.record import file_sha256, write_record
from common.networks import get_network

#: a 3D pocket U-Net of ~1k parameters; depth 2: spatial sizes must be multiples of 4
UNET3D = {"arch": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "init_filters": 4, "depth": 2,
          "pocket": True}
TRACED_3D = [1, 1, 8, 8, 8]


def save_bundle(folder: Path, kwargs: dict[str, Any], wrap: bool = True, seed: int = 0) -> tuple[Any, Path, Path]:
    """A network of ``get_network(**kwargs)`` saved as ``model.pt`` (``{"model": sd}`` or a bare state dict)
    next to a config JSON whose ``network_def`` builds it: (the network in eval mode, config, checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = get_network(**kwargs).eval()
    ckpt = folder / "model.pt"
    torch.save({"model": net.state_dict()} if wrap else net.state_dict(), ckpt)
    config = folder / "inference.json"
    config.write_text(json.dumps({"network_def": {"_target_": "common.networks.get_network", **kwargs}}))
    return net, config, ckpt


@pytest.fixture(scope="session")
def unet3d_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny 3D U-Net, its checkpoint and its ONNX and OpenVINO (fp32) exports (read-only for tests)."""
    folder = tmp_path_factory.mktemp("unet3d")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net, config, ckpt = save_bundle(folder, UNET3D)
        onnx_file = export_onnx(str(config), ckpt, folder / "model.onnx", TRACED_3D, 5)
        xml = export_openvino(onnx_file, folder / "model.xml")
    finally:
        torch.set_num_threads(before)
    return {"kwargs": UNET3D, "net": net, "config": config, "ckpt": ckpt, "onnx": onnx_file, "xml": xml, "dir": folder}


@pytest.fixture
def engine_dir(unet3d_exports: dict[str, Any], tmp_path: Path) -> Callable[..., Path]:
    """``make(chosen, **record)``: a copy of the checkpoint and exports with a fresh ``engine.json`` in tmp_path."""

    def make(chosen: str = "openvino", **record: Any) -> Path:
        folder = tmp_path / "models"
        folder.mkdir(exist_ok=True)
        src = unet3d_exports["dir"]
        for name in ("model.pt", "model.onnx", "model.xml", "model.bin"):
            shutil.copy(src / name, folder / name)
        base = {"checkpoint": "model.pt", "model_sha256": file_sha256(folder / "model.pt"), "chosen": chosen,
                "multiple": [4, 4, 4], "exports": {"onnxruntime": "model.onnx", "openvino": "model.xml"}}
        write_record(folder, {**base, **record})
        return folder

    return make



@pytest.fixture(scope="session")
def saved_bundle() -> Callable[..., tuple[Any, Path, Path]]:
    """``save_bundle`` for the test modules (conftest modules are not imported by name)."""
    return save_bundle
