"""Where a bundle keeps its preprocessed cases: in RAM, on disk, or nowhere (re-read every epoch).

``CacheDataset`` (the bundles' default, ``"cache": "memory"``) holds every preprocessed case in RAM: fast, but real
LiTS at 1 mm needs about 40 GB. ``"cache": "disk"`` uses MONAI's ``PersistentDataset``: the deterministic part of
the preprocessing (up to the first random transform) runs once per case and is saved under ``cache_dir``; a second
epoch, and a second run with the same preprocessing, read the saved tensors back instead (RAM: the cases of one
batch). nnU-Net's "preprocess once" idea, with MONAI's dataset.

The cache file of a case is named by a hash of the case (its file names, and each file's size and modification
time, so that a replaced image is not served stale) and a hash of the deterministic transforms' settings
(:func:`hash_transforms`), so that changing e.g. the working spacing writes a new cache instead of reusing the old
one. MONAI's own ``json_hashing`` of transforms falls back to the transforms' class names, which would not see a
changed spacing; ``pickle_hashing`` fails on a ``Lambdad``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset

from common.data.datacheck import assert_valid
from common.errors import InvalidInputError

__all__ = ["CACHE_MODES", "cached_dataset", "hash_case", "hash_transforms"]

CACHE_MODES = ("memory", "disk", "none")


def _describe(obj: Any, depth: int = 0, seen: set[int] | None = None) -> Any:
    """A JSON-able description of ``obj``'s settings (what decides a deterministic transform's output)."""
    seen = set() if seen is None else seen
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (bytes, bytearray)):
        return hashlib.sha1(bytes(obj)).hexdigest()
    if isinstance(obj, np.ndarray):
        digest = hashlib.sha1(np.ascontiguousarray(obj).tobytes()).hexdigest()
        return ["ndarray", str(obj.dtype), list(obj.shape), digest]
    if isinstance(obj, torch.Tensor):
        return _describe(obj.detach().cpu().numpy(), depth, seen)
    if isinstance(obj, (np.generic, torch.dtype, torch.device, np.dtype, type)):
        return repr(obj)
    if depth > 8 or id(obj) in seen:
        return type(obj).__qualname__
    seen = seen | {id(obj)}
    if isinstance(obj, dict):
        return {str(k): _describe(v, depth + 1, seen) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [_describe(v, depth + 1, seen) for v in items]
    if isinstance(obj, (types.FunctionType, types.LambdaType)):
        code = obj.__code__
        return ["function", obj.__qualname__, hashlib.sha1(code.co_code).hexdigest(),
                _describe([c for c in code.co_consts if not isinstance(c, types.CodeType)], depth + 1, seen)]
    if isinstance(obj, (types.BuiltinFunctionType, types.MethodType, functools.partial)):
        args = [getattr(obj, "args", ()), getattr(obj, "keywords", {})]
        name = getattr(obj, "__qualname__", type(obj).__qualname__)
        return ["callable", repr(name), _describe(args, depth + 1, seen)]
    state = getattr(obj, "__dict__", None)
    if state is None:
        return type(obj).__qualname__
    # a transform's random state and its lazy-resampling bookkeeping do not change a deterministic output
    skip = {"R", "_lazy", "_do_transform", "overrides"}
    return [type(obj).__module__ + "." + type(obj).__qualname__,
            _describe({k: v for k, v in state.items() if k not in skip}, depth + 1, seen)]


def hash_transforms(transforms: Sequence[Any]) -> bytes:
    """Hash of the transforms' classes and settings (``PersistentDataset(hash_transform=...)``)."""
    text = json.dumps(_describe(list(transforms)), sort_keys=True, default=repr)
    return hashlib.md5(text.encode("utf-8")).hexdigest().encode("utf-8")


def hash_case(item: Any) -> bytes:
    """Hash of a data-list entry and of the size and modification time of every file it names."""
    def stat(value: Any) -> Any:
        if isinstance(value, str) and os.path.isfile(value):
            st = os.stat(value)
            return [value, st.st_size, st.st_mtime_ns]
        if isinstance(value, (list, tuple)):
            return [stat(v) for v in value]
        if isinstance(value, dict):
            return {str(k): stat(v) for k, v in value.items()}
        return value

    text = json.dumps(stat(item), sort_keys=True, default=repr)
    return hashlib.md5(text.encode("utf-8")).hexdigest().encode("utf-8")


def cached_dataset(
    data: Sequence[Any],
    transform: Callable[..., Any],
    cache: str = "memory",
    cache_dir: str | os.PathLike[str] | None = None,
    cache_rate: float = 1.0,
    num_workers: int | None = 1,
    progress: bool | None = None,
    check: Mapping[str, Any] | None = None,
) -> Dataset:
    """A dataset that runs ``transform``'s deterministic part once per case, kept where ``cache`` says.

    Args:
        data: the data-list entries.
        transform: the whole preprocessing (deterministic transforms first, then the random ones).
        cache: ``"memory"`` (``CacheDataset``, ``cache_rate`` of the cases in RAM), ``"disk"``
            (``PersistentDataset`` under ``cache_dir``) or ``"none"`` (``Dataset``: everything every epoch).
        cache_dir: the disk cache's folder (created); needed for ``"disk"``. Safe to share between runs and
            bundles: files are named by case and by preprocessing.
        cache_rate, num_workers, progress: ``CacheDataset``'s (memory only); ``progress`` defaults to a bar on a
            terminal only (not on one, tqdm would print a line of carriage returns per dataset).
        check: the data check's settings (``image_channels``, ``label_values``, ``spatial_dims``): every entry is
            checked before anything is read (:func:`common.data.datacheck.assert_valid`). Here rather than around
            the config's ``data`` so that a list put in its place (MONAI Label's datastore) is checked too.
    """
    if check is not None:
        data = assert_valid(data, **check)
    if cache == "memory":
        from common.training.progress import on_terminal

        progress = on_terminal() if progress is None else progress
        return CacheDataset(data=data, transform=transform, cache_rate=cache_rate, num_workers=num_workers,
                            progress=progress)
    if cache == "disk":
        if not cache_dir:
            raise InvalidInputError('"cache": "disk" needs a "cache_dir" (a folder for the preprocessed cases).')
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return PersistentDataset(data=data, transform=transform, cache_dir=cache_dir, hash_func=hash_case,
                                 hash_transform=hash_transforms)
    if cache == "none":
        return Dataset(data=data, transform=transform)
    raise InvalidInputError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}.")
