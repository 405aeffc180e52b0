"""One module per dataset: its data-list builder, its look-alike writer, its dataset-specific transforms.

Every module ``common.datasets.<name>`` offers the same three names:

- ``build_datalist(...) -> dict``: the dataset's data list (format and shared helpers in
  ``common.data.datalists``). Lists fixed by the release's file names take ``(out, suffix)``; lists that
  can only be read from the user's download take ``(dataset_dir, out)``.
- ``COMMITTED_LIST``: for the first kind, the file name of the list committed under ``data_lists/``
  (rewritten by :func:`write_all`); ``None`` for the second kind.
- ``write_lookalike(out, cases, seed, size) -> str``: a small synthetic dataset in the real file layout,
  for CI and for trying a bundle without the download; returns the folder to pass as ``dataset_dir``.

A new dataset is one new module with these names, plus its entry in :data:`DATASETS`. The functions below
serve the command line (``pocket lookalike DATASET --out DIR``, ``pocket datalist DATASET [DATASET_DIR]``).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from common import REPO_ROOT
from common.data.datalists import format_datalist, save_datalist
from common.datasets import brats, covidx, lits, nfbs, prostate
from common.errors import InvalidInputError

__all__ = ["DATASETS", "build_datalist", "get_dataset", "write_all", "write_lookalike"]

#: Dataset name (as typed on the command line) -> its module.
DATASETS: dict[str, ModuleType] = {
    "brats": brats,
    "covidx": covidx,
    "lits": lits,
    "nfbs": nfbs,
    "prostate": prostate,
}
ALL = "all"


def get_dataset(name: str, extra: tuple[str, ...] = ()) -> ModuleType:
    """The module of dataset ``name``, or a one-sentence error listing the valid names (and ``extra``)."""
    if name not in DATASETS:
        valid = ", ".join(sorted([*DATASETS, *extra]))
        raise InvalidInputError(f"unknown dataset {name!r}; valid names: {valid}.")
    return DATASETS[name]


def write_lookalike(
    dataset: str,
    out: str,
    cases: int | None = None,
    seed: int = 0,
    size: int | None = None,
    ids: list[int] | None = None,
    hard: bool = False,
) -> str:
    """Write a look-alike of ``dataset`` under ``out`` and return its root (the ``dataset_dir`` to use).

    ``cases`` and ``size`` (grid side in voxels, or image side in pixels for COVIDx) default to the
    dataset's own; the same ``seed`` gives the same files. ``ids`` (BraTS only): the case numbers to
    write instead of 1..cases. ``hard`` (NFBS and LiTS): anatomy whose target is harder to delineate, for
    telling training recipes apart; the default data do not change.
    """
    module = get_dataset(dataset)
    options = {key: value for key, value in (("cases", cases), ("size", size), ("ids", ids)) if value is not None}
    if ids is not None and module is not brats:
        raise InvalidInputError(f"ids (case numbers) apply to the brats look-alike only, not to {dataset}.")
    if hard:
        if module not in (nfbs, lits):
            raise InvalidInputError(f"hard applies to the nfbs and lits look-alikes only, not to {dataset}.")
        options["hard"] = True
    return module.write_lookalike(out, seed=seed, **options)


def write_all(out_dir: str | os.PathLike | None = None) -> list[str]:
    """Write every committed list (``brats2020.json``, ``lits.json``) into ``out_dir``; return the paths.

    ``out_dir`` defaults to the repository's ``data_lists/`` folder, where they are committed.
    """
    folder = Path(REPO_ROOT / "data_lists" if out_dir is None else out_dir)
    committed = [module for module in DATASETS.values() if module.COMMITTED_LIST is not None]
    return [str(save_datalist(module.build_datalist(), folder / module.COMMITTED_LIST)) for module in committed]


def build_datalist(
    dataset: str,
    dataset_dir: str | None = None,
    out: str | None = None,
    suffix: str | None = None,
) -> str:
    """The 5-fold MONAI data list of a dataset, printed or written to ``out`` (``all``: the committed ones).

    Without ``out`` the answer is the list itself (JSON); with ``out`` the list is written there and the
    answer is a one-line summary. LiTS and BraTS lists are fixed by the release's file names and need no
    ``dataset_dir`` (``suffix`` ".nii.gz" lists gzipped files); NFBS, COVIDx and prostate lists are read
    from the download in ``dataset_dir``. ``dataset="all"`` rewrites the committed lists (:func:`write_all`)
    into ``out`` (a folder; default the repository's ``data_lists/``).
    """
    if dataset == ALL:
        if dataset_dir is not None or suffix is not None:
            raise InvalidInputError("'all' writes the committed LiTS and BraTS lists and takes no dataset_dir or "
                                    "suffix.")
        return "wrote " + ", ".join(write_all(out))
    module = get_dataset(dataset, extra=(ALL,))
    if module.COMMITTED_LIST is not None:
        if dataset_dir is not None:
            raise InvalidInputError(f"the {dataset} list is fixed by the release's file names and takes no "
                                    "dataset_dir.")
        datalist = module.build_datalist(out=out, **({} if suffix is None else {"suffix": suffix}))
    else:
        if dataset_dir is None:
            raise InvalidInputError(f"the {dataset} list is read from your download: pass its folder as dataset_dir.")
        if suffix is not None:
            raise InvalidInputError(f"suffix applies to the lits and brats lists only; the {dataset} list takes its "
                                    "names from the download.")
        datalist = module.build_datalist(dataset_dir, out=out)
    if out is None:
        return format_datalist(datalist).rstrip("\n")
    return (
        f"wrote {out}: {len(datalist['training'])} training cases in {datalist['num_folds']} folds, "
        f"{len(datalist['testing'])} testing cases"
    )
