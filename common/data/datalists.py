"""Build and read the data lists (MONAI/MSD "datalist" JSON) of the pocket bundles.

A data list names every case of a dataset by paths RELATIVE to the dataset root, so one committed
file works on every machine; the bundle configs join them with the user's ``dataset_dir`` at run
time (:func:`load_fold`). Cross-validation folds are stored in the list (``"fold": k``) so that every
bundle, run and person trains and validates on the same split.

Two lists are fixed by the dataset's official naming and are committed (``lits.json``,
``brats2020.json``, written by :func:`write_all`); the others are built from the user's download
because their content is only known there (NFBS subject IDs, COVIDx split files, MSD ``dataset.json``).

CLI (``fire``)::

    python -m common.data.datalists write_all --out_dir data_lists
    python -m common.data.datalists nfbs /data/NFBS_Dataset --out data_lists/nfbs.json
    python -m common.data.datalists covidx /data/covidx --out data_lists/covidx8b.json
    python -m common.data.datalists msd /data/Task05_Prostate --out data_lists/msd_prostate.json

Without ``--out`` the list is printed as JSON.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "NUM_FOLDS",
    "SEED",
    "assign_folds",
    "brats",
    "covidx",
    "lits",
    "load_fold",
    "msd",
    "nfbs",
    "save_datalist",
    "write_all",
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


def _assign_group_folds(
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


# ------------------------------------------------------------------------------------------- writing
def _dumps(datalist: dict) -> str:
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
    path.write_text(_dumps(datalist), encoding="utf-8")
    return path


def _finish(datalist: dict, out: str | os.PathLike | None) -> dict:
    if out is not None:
        save_datalist(datalist, out)
    return datalist


def _header(name: str, description: str, labels: dict, modality: dict) -> dict:
    return {
        "name": name,
        "description": description,
        "labels": labels,
        "modality": modality,
        "num_folds": NUM_FOLDS,
    }


# --------------------------------------------------------------------------------- canonical lists
def lits(out: str | None = None, suffix: str = ".nii") -> dict:
    """Canonical LiTS 2017 training list: ``volume-N.nii`` / ``segmentation-N.nii``, N = 0..130."""
    cases = list(range(131))
    folds = assign_folds(cases)
    datalist = _header(
        "LiTS 2017",
        "Liver Tumor Segmentation challenge 2017, 131 training CT volumes. Paths are relative to one folder "
        "holding all volume-N.nii and segmentation-N.nii files: merge the download's 'Training Batch 1' and "
        "'Training Batch 2' folders into that one folder. Test volumes have no public labels and are not "
        f"listed. Folds: {NUM_FOLDS}, seed {SEED}.",
        {"0": "background", "1": "liver", "2": "tumour"},
        {"0": "CT"},
    )
    datalist["training"] = [
        {"image": f"volume-{n}{suffix}", "label": f"segmentation-{n}{suffix}", "fold": folds[n]}
        for n in cases
    ]
    datalist["testing"] = []
    return _finish(datalist, out)


BRATS_CHANNELS = ("t1", "t1ce", "t2", "flair")


def brats(out: str | None = None, suffix: str = ".nii") -> dict:
    """Canonical BraTS 2020 training list (369 cases); ``image`` lists t1, t1ce, t2, flair in that order.

    Case 355's mask has a non-standard file name in the official release and is aliased here.
    """
    cases = [f"BraTS20_Training_{n:03d}" for n in range(1, 370)]
    folds = assign_folds(cases)
    datalist = _header(
        "BraTS 2020",
        "BraTS 2020 training data, 369 cases. Paths are relative to the MICCAI_BraTS2020_TrainingData "
        "folder. 'image' lists the four MR channels in the order t1, t1ce, t2, flair. Labels are the "
        "native BraTS values 0, 1 (NCR/NET), 2 (edema), 4 (enhancing tumour). Case 355's mask is "
        f"W39_1998.09.19_Segm.nii in the official release. Folds: {NUM_FOLDS}, seed {SEED}.",
        {
            "0": "background",
            "1": "necrotic and non-enhancing tumour core",
            "2": "peritumoral edema",
            "4": "enhancing tumour",
        },
        {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
    )
    training = []
    for case in cases:
        label = f"{case}/{case}_seg{suffix}"
        if case == "BraTS20_Training_355":
            label = f"{case}/W39_1998.09.19_Segm{suffix}"
        image = [f"{case}/{case}_{c}{suffix}" for c in BRATS_CHANNELS]
        training.append({"image": image, "label": label, "fold": folds[case]})
    datalist["training"] = training
    datalist["testing"] = []
    return _finish(datalist, out)


def write_all(out_dir: str = "data_lists") -> list[str]:
    """Write the committed canonical lists (``lits.json``, ``brats2020.json``) into ``out_dir``."""
    written = [
        save_datalist(lits(), Path(out_dir) / "lits.json"),
        save_datalist(brats(), Path(out_dir) / "brats2020.json"),
    ]
    return [str(p) for p in written]


# ------------------------------------------------------------------------ lists built from downloads
def _require_dir(dataset_dir: str | os.PathLike, what: str) -> Path:
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{what} folder {root} does not exist or is not a folder.")
    return root


def nfbs(dataset_dir: str, out: str | None = None) -> dict:
    """List the subjects of a user's ``NFBS_Dataset`` folder (IDs are only known from the download)."""
    root = _require_dir(dataset_dir, "NFBS_Dataset")
    subjects = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subjects:
        raise FileNotFoundError(f"NFBS_Dataset folder {root} contains no subject folders.")
    training = []
    folds = assign_folds(subjects)
    for sid in subjects:
        image = f"sub-{sid}_ses-NFB3_T1w.nii.gz"
        label = f"sub-{sid}_ses-NFB3_T1w_brainmask.nii.gz"
        for fname in (image, label):
            if not (root / sid / fname).is_file():
                raise FileNotFoundError(f"NFBS subject folder {root / sid} is missing the file {fname}.")
        training.append({"image": f"{sid}/{image}", "label": f"{sid}/{label}", "fold": folds[sid]})
    datalist = _header(
        "NFBS",
        f"Neurofeedback Skull-stripped repository, {len(subjects)} T1w MR subjects with brain masks. "
        f"Paths are relative to the NFBS_Dataset folder. Folds: {NUM_FOLDS}, seed {SEED}.",
        {"0": "background", "1": "brain"},
        {"0": "T1w"},
    )
    datalist["training"] = training
    datalist["testing"] = []
    return _finish(datalist, out)


COVIDX_LABELS = {"negative": 0, "positive": 1}


def _read_covidx_split(path: Path) -> list[tuple[str, str, int]]:
    """Parse a COVIDx8B split file into (patient_id, image_filename, label) rows."""
    if not path.is_file():
        raise FileNotFoundError(f"COVIDx split file {path} does not exist.")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rsplit(maxsplit=3)
            if len(fields) != 4 or fields[2] not in COVIDX_LABELS:
                raise ValueError(
                    f"{path}, line {lineno}: expected '<patient_id> <image_filename> <positive|negative> "
                    f"<source>', got {line.strip()!r}."
                )
            pid, fname, label, _source = fields
            rows.append((pid, fname, COVIDX_LABELS[label]))
    return rows


def covidx(dataset_dir: str, out: str | None = None) -> dict:
    """Build the COVIDx V8B (binary) list from its split files, with folds grouped by patient.

    Grouping by patient keeps images of one person out of both training and validation (leakage);
    positives are spread evenly over the folds.
    """
    root = _require_dir(dataset_dir, "COVIDx")
    train_rows = _read_covidx_split(root / "train_COVIDx8B.txt")
    test_rows = _read_covidx_split(root / "test_COVIDx8B.txt")
    groups: dict[str, list[int]] = {}
    for pid, _fname, label in train_rows:
        groups.setdefault(pid, []).append(label)
    folds = _assign_group_folds(groups)
    datalist = _header(
        "COVIDx8B",
        "COVIDx V8B chest X-ray binary classification (label 1 = COVID-19 positive). Paths are "
        "relative to the folder holding train_COVIDx8B.txt, test_COVIDx8B.txt, train/ and test/. Folds are "
        "assigned by patient (all images of a patient in one fold), balanced by class. "
        f"Folds: {NUM_FOLDS}, seed {SEED}.",
        {"0": "negative", "1": "positive"},
        {"0": "CXR"},
    )
    datalist["training"] = [
        {"image": f"train/{fname}", "label": label, "fold": folds[pid]} for pid, fname, label in train_rows
    ]
    datalist["testing"] = [{"image": f"test/{fname}", "label": label} for _pid, fname, label in test_rows]
    return _finish(datalist, out)


def _norm_rel(path: str) -> str:
    while path.startswith("./"):
        path = path[2:]
    return path


def _is_junk(path: str) -> bool:
    return os.path.basename(path).startswith("._")


def msd(dataset_dir: str, out: str | None = None) -> dict:
    """Convert an MSD task's ``dataset.json`` into a fold-annotated list (paths without ``./``)."""
    root = _require_dir(dataset_dir, "MSD task")
    src_file = root / "dataset.json"
    if not src_file.is_file():
        raise FileNotFoundError(f"MSD task folder {root} has no dataset.json.")
    src = json.loads(src_file.read_text(encoding="utf-8"))
    training = []
    for i, item in enumerate(src.get("training", [])):
        if not isinstance(item, dict) or "image" not in item:
            raise ValueError(f"{src_file}: training entry {i} is not an object with an 'image' path.")
        entry = {k: _norm_rel(v) if isinstance(v, str) else v for k, v in item.items()}
        if any(isinstance(v, str) and _is_junk(v) for v in entry.values()):
            continue
        training.append(entry)
    folds = assign_folds(e["image"] for e in training)
    for entry in training:
        entry["fold"] = folds[entry["image"]]
    testing = []
    for item in src.get("test", src.get("testing", [])):
        image = item if isinstance(item, str) else item.get("image")
        if not isinstance(image, str):
            raise ValueError(f"{src_file}: test entry {item!r} has no image path.")
        if not _is_junk(image):
            testing.append({"image": _norm_rel(image)})
    datalist = {key: src[key] for key in ("name", "description") if key in src}
    datalist.setdefault("name", root.name)
    datalist.setdefault("description", f"Medical Segmentation Decathlon {root.name}.")
    for key in ("tensorImageSize", "modality", "labels"):
        if key in src:
            datalist[key] = src[key]
    datalist["num_folds"] = NUM_FOLDS
    datalist["training"] = training
    datalist["testing"] = testing
    return _finish(datalist, out)


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
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}.")
    if not os.path.isfile(datalist_file):
        raise FileNotFoundError(f"Data list file {datalist_file} does not exist.")
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
                raise ValueError(
                    f"fold must be in 0..{num_folds - 1} for split {split!r} of {datalist_file}; got {fold}."
                )
            for e in entries:
                if "fold" not in e:
                    raise ValueError(f"{datalist_file}: training entry {e!r} has no 'fold' key.")
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


# -------------------------------------------------------------------------------------------- CLI
def _summarised(fn: Callable[..., dict]) -> Callable[..., str]:
    """CLI wrapper: print a one-line summary when ``--out`` is given, else the JSON list itself."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        datalist = fn(*args, **kwargs)
        out = inspect.signature(fn).bind(*args, **kwargs).arguments.get("out")
        if out is None:
            return _dumps(datalist).rstrip("\n")
        return (
            f"wrote {out}: {len(datalist['training'])} training cases in {datalist['num_folds']} folds, "
            f"{len(datalist['testing'])} testing cases"
        )

    return wrapper


def main() -> None:
    """Entry point of ``python -m common.data.datalists``."""
    import fire

    fire.Fire(
        {
            "lits": _summarised(lits),
            "brats": _summarised(brats),
            "nfbs": _summarised(nfbs),
            "covidx": _summarised(covidx),
            "msd": _summarised(msd),
            "write_all": write_all,
        }
    )


if __name__ == "__main__":
    main()
