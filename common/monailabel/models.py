"""The model names the MONAI Label app serves for a bundle: the bundle, its variants, its exported engines.

``<bundle>``: ``inference.json`` with the engine ``pocket engines`` recorded (torch when none);
``<bundle>_<variant>``: ``inference.json`` plus an overlay (``inference_cascade.json`` -> ``cascade``, and the
overlays for every command such as BraTS's ``regions.json``); ``<bundle>_<engine>``: one exported engine
(``onnxruntime``, ``openvino``, ``openvino_int8``) that is present and up to date with ``model.pt``.
Monailabel-free, so that the collection's own environment can list and test them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from common.engines.record import ENGINES, read_record
from common.engines.runtime import engine_unavailable

__all__ = ["bundle_dirs", "bundle_overlays", "model_names"]

#: Config files that are not inference overlays.
_NOT_OVERLAYS = ("inference.", "train", "evaluate", "metadata", "multi_gpu", "logging", "monailabel_")


def bundle_dirs(bundles: str | os.PathLike) -> list[Path]:
    """The bundle folders under ``bundles`` (those with ``configs/metadata.json``)."""
    return sorted(p for p in Path(bundles).iterdir() if (p / "configs" / "metadata.json").is_file())


def bundle_overlays(bundle_dir: str | os.PathLike) -> dict[str, Path]:
    """Variant name -> overlay config of ``bundle_dir``."""
    out = {}
    for path in sorted((Path(bundle_dir) / "configs").glob("*.json")):
        if path.name.startswith("inference_"):
            out[path.stem.removeprefix("inference_")] = path
        elif not path.name.startswith(_NOT_OVERLAYS):
            out[path.stem] = path
    return out


def model_names(bundle_dir: str | os.PathLike, ckpt_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Model name -> the task's ``variant`` / ``engine`` argument, for every candidate of one bundle.

    Variants are candidates whether or not trained (the app serves those whose weights exist); engines only when
    their export in ``ckpt_dir`` can run (:func:`common.engines.runtime.engine_unavailable`).
    """
    name = Path(bundle_dir).name
    names: dict[str, dict[str, Any]] = {name: {}}
    names.update({f"{name}_{variant}": {"variant": variant} for variant in bundle_overlays(bundle_dir)})
    record = read_record(ckpt_dir)
    names.update({f"{name}_{engine}": {"engine": engine} for engine in ENGINES
                  if engine != "torch" and engine_unavailable(engine, ckpt_dir, record) is None})
    return names
