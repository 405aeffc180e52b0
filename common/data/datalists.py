"""Data lists (MONAI/MSD "datalist" JSON) shared by every dataset: folds, writing, reading, finding images.

A data list names every case of a dataset by paths RELATIVE to the dataset root, so one committed file
works on every machine; the bundle configs join them with the user's ``dataset_dir`` at run time
(:func:`load_fold`). Cross-validation folds are stored in the list (``"fold": k``) so that every bundle,
run and person trains and validates on the same split.

What a dataset's list contains is dataset knowledge and lives in ``common.datasets.<name>.build_datalist``;
this module holds what those builders share (:func:`assign_folds`, :func:`datalist_header`,
:func:`finish_datalist` ...) and what the bundle configs call (:func:`load_fold`, :func:`find_images`).
"""

from __future__ import annotations

import copy
import glob
import json
import os
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InvalidInputError, MissingInputError

__all__ = [
    "NUM_FOLDS",
    "SEED",
    "assign_folds",
    "assign_group_folds",
    "dataset_root",
    "datalist_header",
    "find_images",
    "finish_datalist",
    "format_datalist",
    "load_fold",
    "save_datalist",
]

NUM_FOLDS = 5
SEED = 42
PATH_KEYS = ("image", "label")
SPLITS = ("train", "val", "all", "test")


# --------------------------------------------------------------------------------------------- folds
def assign_folds(ids: Iterable[Hashable], num_folds: int = NUM_FOLDS, seed: int = SEED) -> dict[Any, int]:
    """Map each case id to a fold: sort, shuffle with a fixed seed, then deal round-robin.

    Sorting first makes the result independent of the order the ids were found in (e.g. directory
    listing order), the fixed seed makes it reproducible, and round-robin keeps fold sizes within one
    case of each other.
    """
    unique = sorted(set(ids))
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[int(j)]: pos % num_folds for pos, j in enumerate(order)}


def assign_group_folds(
    groups: dict[str, list[int]], num_folds: int = NUM_FOLDS, seed: int = SEED
) -> dict[str, int]:
    """Assign whole groups (patients) to folds, balancing image counts per class.

    ``groups`` maps a patient id to the class labels of its images. Patients with any positive image
    are placed first (so positives spread evenly over folds), each patient going to the fold that
    currently holds the fewest images of its class group; large patients go first within a group
    (stable sort keeps the seeded shuffle among equal sizes), which keeps folds nearly equal.
    """
    rng = np.random.default_rng(seed)
    ids = sorted(groups)
    shuffled = [ids[int(j)] for j in rng.permutation(len(ids))]
    positive = [p for p in shuffled if any(groups[p])]
    negative = [p for p in shuffled if not any(groups[p])]
    folds: dict[str, int] = {}
    total = [0] * num_folds
    for group in (positive, negative):
        in_group = [0] * num_folds
        for pid in sorted(group, key=lambda p: -len(groups[p])):
            k = min(range(num_folds), key=lambda f: (in_group[f], total[f], f))
            folds[pid] = k
            in_group[k] += len(groups[pid])
            total[k] += len(groups[pid])
    return folds


# ----------------------------------------------------------------------------------------- building
def datalist_header(name: str, description: str, labels: dict, modality: dict) -> dict:
    """The keys every list starts with (MSD ``dataset.json`` style), plus ``num_folds``."""
    return {
        "name": name,
        "description": description,
        "labels": labels,
        "modality": modality,
        "num_folds": NUM_FOLDS,
    }


def dataset_root(dataset_dir: str | os.PathLike, what: str) -> Path:
    """``dataset_dir`` as a ``Path``, or a one-sentence error naming ``what`` folder was expected."""
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise MissingInputError(f"{what} folder {root} does not exist or is not a folder.")
    return root


def format_datalist(datalist: dict) -> str:
    """JSON text with one case per line: short, readable and diff-friendly for committed lists."""
    lines = ["{"]
    items = list(datalist.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"  {json.dumps(key)}: [")
            entries = [f"    {json.dumps(v, ensure_ascii=False)}" for v in value]
            lines.append(",\n".join(entries))
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def save_datalist(datalist: dict, out: str | os.PathLike) -> Path:
    """Write ``datalist`` to ``out`` (parents created) so it can be committed or passed to a bundle."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_datalist(datalist), encoding="utf-8")
    return path


def finish_datalist(datalist: dict, out: str | os.PathLike | None) -> dict:
    """The builders' last step: save to ``out`` when given, and return the list either way."""
    if out is not None:
        save_datalist(datalist, out)
    return datalist


# ---------------------------------------------------------------------------------------- reading
def _join(root: str, value: Any) -> Any:
    if isinstance(value, str):
        return os.path.normpath(os.path.join(root, value))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [os.path.normpath(os.path.join(root, v)) for v in value]
    return value


def load_fold(
    datalist_file: str,
    dataset_dir: str,
    fold: int,
    split: str,
    path_keys: Sequence[str] = PATH_KEYS,
) -> list[dict]:
    """Return the cases of one split with absolute paths, ready for a MONAI ``Dataset``.

    ``split``: "train" (every fold except ``fold``), "val" (only ``fold``), "all" (every training case,
    ``fold`` ignored) or "test" (the ``testing`` section). Paths under ``path_keys`` (strings or lists of
    strings) are joined with ``dataset_dir``; the ``fold`` key is dropped.
    """
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {', '.join(SPLITS)}; got {split!r}.")
    if not os.path.isfile(datalist_file):
        raise MissingInputError(f"Data list file {datalist_file} does not exist.")
    with open(datalist_file, encoding="utf-8") as f:
        datalist = json.load(f)
    if split == "test":
        entries = datalist.get("testing", datalist.get("test", []))
        entries = [{"image": e} if isinstance(e, str) else e for e in entries]
    else:
        entries = datalist.get("training", [])
        if split != "all":
            num_folds = int(datalist.get("num_folds", NUM_FOLDS))
            if not 0 <= int(fold) < num_folds:
                raise InvalidInputError(
                    f"fold must be in 0..{num_folds - 1} for split {split!r} of {datalist_file}; got {fold}."
                )
            for e in entries:
                if "fold" not in e:
                    raise InvalidInputError(f"{datalist_file}: training entry {e!r} has no 'fold' key.")
            keep = (lambda k: k != fold) if split == "train" else (lambda k: k == fold)
            entries = [e for e in entries if keep(int(e["fold"]))]
    root = os.path.abspath(os.path.expanduser(dataset_dir))
    result = []
    for e in entries:
        item = {k: copy.deepcopy(v) for k, v in e.items() if k != "fold"}
        for key in path_keys:
            if key in item:
                item[key] = _join(root, item[key])
        result.append(item)
    return result


def find_images(dataset_dir: str, pattern: str | Sequence[str]) -> list[dict]:
    """``[{"image": path}, ...]`` for the files matching ``pattern`` under ``dataset_dir`` (inference input).

    The inference configs' data list when there is no data-list file: every file (or DICOM series folder)
    matching the glob pattern, or any of a list of them (one per file format), sorted, macOS ``._`` junk
    files skipped.
    """
    if not os.path.isdir(dataset_dir):
        raise MissingInputError(f"{dataset_dir}: input folder does not exist.")
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    found = {f for p in patterns for f in glob.glob(os.path.join(dataset_dir, p))}
    files = sorted(f for f in found if not os.path.basename(f).startswith("._"))
    if not files:
        shown = repr(patterns[0]) if len(patterns) == 1 else "any of " + ", ".join(map(repr, patterns))
        raise MissingInputError(f"{dataset_dir}: no input image matches {shown}.")
    return [{"image": f} for f in files]
