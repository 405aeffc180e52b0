"""Export a bundle's trained network to ONNX (MONAI's ``onnx_export``) and to OpenVINO IR.

The ONNX file is made by ``monai.bundle.onnx_export``, the same code as the documented command
``python -m monai.bundle onnx_export network_def ...``, with dynamic batch and spatial axes so that one file
serves sliding windows and whole volumes alike; MONAI checks its output against torch with ONNX Runtime. The
OpenVINO IR is converted from that file with ``openvino.convert_model``, weights kept in fp32.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["checkpoint_key", "dynamic_axes", "export_onnx", "export_openvino"]


def checkpoint_key(ckpt_file: str | Path) -> str | None:
    """``"model"`` when the checkpoint holds ``{"model": state_dict}`` (several objects saved), else ``None``."""
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    return "model" if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict) else None


def dynamic_axes(input_dims: int, output_dims: int) -> dict[str, dict[int, str]]:
    """Batch and every spatial axis of the input (``image``) and output (``pred``) left free."""
    return {
        "image": {0: "batch", **{i: f"in{i - 2}" for i in range(2, input_dims)}},
        "pred": {0: "batch", **{i: f"out{i - 2}" for i in range(2, output_dims)}},
    }


def export_onnx(
    config_file: str | Sequence[str],
    ckpt_file: str | Path,
    filepath: str | Path,
    input_shape: Sequence[int],
    output_dims: int,
    net_id: str = "network_def",
    **override: Any,
) -> Path:
    """``monai.bundle.onnx_export`` of ``net_id`` with the weights of ``ckpt_file``, verified with ONNX Runtime.

    Args:
        config_file: the bundle config(s) that define ``net_id`` (e.g. ``configs/inference.json``).
        input_shape: the traced input, ``[1, channels, *window]``; the exported axes stay dynamic.
        output_dims: number of dimensions of the network's output (a classifier's logits: 2).
        override: config overrides (``arch``, ``pocket``, ...), as on the command line.
    """
    from monai.bundle import onnx_export

    filepath = Path(filepath)
    filepath.parent.mkdir(parents=True, exist_ok=True)
    onnx_export(
        net_id=net_id,
        filepath=str(filepath),
        ckpt_file=str(ckpt_file),
        config_file=config_file,
        key_in_ckpt=checkpoint_key(ckpt_file),
        use_trace=True,
        input_shape=list(input_shape),
        converter_kwargs={
            "input_names": ["image"],
            "output_names": ["pred"],
            "dynamic_axes": dynamic_axes(len(input_shape), output_dims),
            "opset_version": 17,
            "dynamo": False,
            "verify": True,
            "use_ort": True,
            "rtol": 1e-3,
            "atol": 1e-4,
        },
        **override,
    )
    return filepath


def export_openvino(onnx_file: str | Path, xml_file: str | Path) -> Path:
    """Convert an ONNX file to OpenVINO IR (``.xml`` + ``.bin``), weights in fp32 (not compressed to fp16)."""
    import openvino

    model = openvino.convert_model(str(onnx_file))
    openvino.save_model(model, str(xml_file), compress_to_fp16=False)
    return Path(xml_file)
