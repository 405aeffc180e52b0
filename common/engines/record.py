"""What ``pocket engines`` leaves next to a checkpoint: the exports, their source hash, scores and the winner.

``<ckpt_dir>/engine.json`` is read by inference (``load_engine``) like ``postprocessing.json``: it names the
engine chosen for this trained model and the SHA-256 of the ``model.pt`` the exports were made from, so that
an export older than the checkpoint (the model was retrained) is never used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["ENGINES", "EXPORT_FILES", "RECORD_FILE", "file_sha256", "read_record", "write_record"]

#: Every engine a bundle can run its network with; ``auto`` (the configs' default) reads the recorded choice.
ENGINES = ("torch", "onnxruntime", "openvino", "openvino_int8")
#: The exported file of each non-torch engine, in the checkpoint's folder (OpenVINO IR: ``.xml`` + ``.bin``).
EXPORT_FILES = {"onnxruntime": "model.onnx", "openvino": "model.xml", "openvino_int8": "model_int8.xml"}
RECORD_FILE = "engine.json"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (a pocket checkpoint is a few MB: milliseconds)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_record(ckpt_dir: str | Path) -> dict[str, Any] | None:
    """The engine record of ``ckpt_dir``, or ``None`` when there is none (nothing exported yet)."""
    path = Path(ckpt_dir) / RECORD_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_record(ckpt_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` as ``<ckpt_dir>/engine.json`` (written to a temporary name first, then renamed)."""
    path = Path(ckpt_dir) / RECORD_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
