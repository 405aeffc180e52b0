"""The settings a model was trained with, saved beside its checkpoint, so that it is used as trained.

A model trained with overrides (``--init_filters 16 --patch_size [64,64,64]``) needs the same network and input
settings at inference, evaluation and export; without a record the user must repeat every override, and a
forgotten one fails deep inside ``load_state_dict`` or silently changes the input. Training writes
``<ckpt_dir>/training_params.json``; the inference and evaluation configs take each setting from it by default
(:func:`trained`), and an explicit setting that contradicts it stops with one sentence (:func:`check_trained`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.errors import InvalidInputError

__all__ = ["PARAMS_FILE", "check_trained", "read_training_params", "save_training_params", "trained"]

PARAMS_FILE = "training_params.json"


def _plain(value: Any) -> Any:
    """JSON-comparable form (tuples become lists)."""
    return json.loads(json.dumps(value))


def save_training_params(ckpt_dir: str | os.PathLike, params: Mapping[str, Any]) -> Path | None:
    """Write ``params`` (the resolved network and input settings) as ``<ckpt_dir>/training_params.json``.

    Written to a temporary name, then renamed, and only by the first process of a ``torchrun`` job.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    path = Path(ckpt_dir) / PARAMS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_plain(dict(params)), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_training_params(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """The saved settings of ``ckpt_dir`` (empty for a model trained before they were saved)."""
    path = Path(ckpt_dir) / PARAMS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def trained(ckpt_dir: str | os.PathLike, key: str, default: Any) -> Any:
    """The setting ``key`` the model of ``ckpt_dir`` was trained with, else ``default`` (the config's own)."""
    return read_training_params(ckpt_dir).get(key, default)


def check_trained(ckpt_dir: str | os.PathLike, params: Mapping[str, Any]) -> Mapping[str, Any]:
    """``params`` unchanged when they agree with the saved settings; otherwise one sentence naming each one.

    Raises ``InvalidInputError`` e.g. "…/models/model.pt was trained with init_filters 16, this run asks 32".
    """
    saved = read_training_params(ckpt_dir)
    wrong = [f"{key} {json.dumps(saved[key])}, this run asks {json.dumps(_plain(value))}"
             for key, value in params.items() if key in saved and _plain(value) != saved[key]]
    if wrong:
        raise InvalidInputError(f"{Path(ckpt_dir) / 'model.pt'} was trained with " + "; with ".join(wrong)
                                + " (drop the override, or train again with it).")
    return params
