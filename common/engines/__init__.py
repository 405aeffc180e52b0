"""Inference engines for the CPU: the bundle's network exported to ONNX Runtime and OpenVINO (fp32, INT8).

``record`` (what sits next to the checkpoint), ``export`` (ONNX through MONAI's ``onnx_export``, OpenVINO IR),
``quantize`` (NNCF INT8 with calibration inputs from the bundle's pipeline), ``runtime`` (the engines as
network-like modules, and ``load_engine`` that the bundle configs call), ``measure`` (memory per voxel) and
``choose`` (the ``pocket engines`` command).
"""

from common.engines.record import ENGINES, EXPORT_FILES, read_record
from common.engines.runtime import load_engine

__all__ = ["ENGINES", "EXPORT_FILES", "load_engine", "read_record"]
