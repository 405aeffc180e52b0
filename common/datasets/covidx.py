"""COVIDx V8B, COVID-19 positive/negative chest X-ray classification: what the bundle needs to know of it.

- :func:`build_datalist`: the data list of a user's download, read from its split files, with folds
  grouped by patient.
- :func:`write_lookalike`: a small synthetic COVIDx in the real layout (PA chest films, positives with
  bilateral lower-zone opacities; mixed PNG/JPEG, grey/RGB and sizes; the 4-field split files).
- :func:`write_dicom_film`: a look-alike film as a modality's DICOM export (12-bit, VOI window, MONOCHROME1 or 2).
- :func:`to_grey`: COVIDx mixes grey and RGB PNG/JPEG files, so the loader converts every image to one
  grey channel (a ``PILReader`` converter).
- :class:`PredictionCSV`: MONAI's stock ``CSVSaver`` writes bare numbers without a header, which a reader
  of the results cannot interpret; this drop-in ``saver`` for MONAI's ``ClassificationSaver`` handler
  writes one named row per image instead::

    filename,predicted_class,predicted_label,probability_negative,probability_positive[,label]

Config use (``configs/inference.json``)::

    {"_target_": "ClassificationSaver", "output_transform": "$common.datasets.covidx.prediction_rows()",
     "batch_transform": "$lambda x: [xx['image'].meta for xx in x]",
     "saver": {"_target_": "common.datasets.covidx.PredictionCSV", "output_dir": "@output_dir"}}
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from common.data.datalists import NUM_FOLDS, SEED, assign_group_folds, datalist_header, dataset_root, finish_datalist
from common.data.synthetic import blob, case_ids, case_rng, smooth_noise
from common.errors import InvalidInputError, MissingInputError

__all__ = [
    "CLASS_NAMES",
    "COMMITTED_LIST",
    "GREY_MODES",
    "SPLIT_LABELS",
    "PredictionCSV",
    "build_datalist",
    "prediction_rows",
    "to_grey",
    "write_dicom_film",
    "write_lookalike",
]

CLASS_NAMES = ("negative", "positive")
#: The class words of the split files and the label each gets in the data list.
SPLIT_LABELS = {name: index for index, name in enumerate(CLASS_NAMES)}
#: The list is built from the user's download (see ``common.datasets``); nothing is committed.
COMMITTED_LIST = None
# Pillow modes that already hold one grey channel (8-bit, 16-bit, 32-bit int, float): kept as they are so
# that 16-bit films keep their full range (converting them to "L" would clip at 255).
GREY_MODES = ("L", "I", "I;16", "I;16B", "I;16L", "F")


# --------------------------------------------------------------------------------------- data list
def _read_split(path: Path) -> list[tuple[str, str, int]]:
    """Parse a COVIDx8B split file into (patient_id, image_filename, label) rows."""
    if not path.is_file():
        raise MissingInputError(f"COVIDx split file {path} does not exist.")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rsplit(maxsplit=3)
            if len(fields) != 4 or fields[2] not in SPLIT_LABELS:
                raise InvalidInputError(
                    f"{path}, line {lineno}: expected '<patient_id> <image_filename> <positive|negative> "
                    f"<source>', got {line.strip()!r}."
                )
            pid, fname, label, _source = fields
            rows.append((pid, fname, SPLIT_LABELS[label]))
    return rows


def build_datalist(dataset_dir: str, out: str | None = None) -> dict:
    """Build the COVIDx V8B (binary) list from its split files, with folds grouped by patient.

    Grouping by patient keeps images of one person out of both training and validation (leakage);
    positives are spread evenly over the folds.
    """
    root = dataset_root(dataset_dir, "COVIDx")
    train_rows = _read_split(root / "train_COVIDx8B.txt")
    test_rows = _read_split(root / "test_COVIDx8B.txt")
    groups: dict[str, list[int]] = {}
    for pid, _fname, label in train_rows:
        groups.setdefault(pid, []).append(label)
    folds = assign_group_folds(groups)
    datalist = datalist_header(
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
    return finish_datalist(datalist, out)


# ---------------------------------------------------------------------------------------- look-alike
def _chest_xray(rng: np.random.Generator, h: int, w: int, positive: bool) -> tuple[np.ndarray, np.ndarray]:
    """A PA chest film (uint8) and its lung mask; positives get bilateral patchy lower-zone opacities.

    All random draws are made in the same order for both classes, so one seed gives the same film with
    and without opacities (the tests use this to check that the class signal is there).
    """
    gain, offset, gamma = rng.uniform(0.8, 1.15), rng.uniform(-15, 15), rng.uniform(0.8, 1.25)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-1, 1, w, dtype=np.float32),
                         indexing="ij", sparse=True)
    g = [yy, xx]
    thorax = blob(g, [rng.uniform(0.1, 0.25), rng.uniform(-0.04, 0.04)], rng.uniform([1.0, 0.8], [1.1, 0.9]),
                   rng, wobble=0.05)
    lungs = np.zeros((h, w), dtype=bool)
    for side in (-1, 1):
        c = [rng.uniform(-0.1, 0.0), side * rng.uniform(0.38, 0.46)]
        lung = blob(g, c, rng.uniform([0.5, 0.22], [0.6, 0.3]), rng, wobble=0.08) < 1.0
        dome = rng.uniform(0.38, 0.5) - 0.35 * ((xx - c[1]) / 0.3) ** 2
        lungs |= lung & (yy < dome)
    heart_c = [rng.uniform(0.22, 0.32), rng.uniform(0.08, 0.16)]
    heart = blob(g, heart_c, rng.uniform([0.24, 0.22], [0.3, 0.28]), rng, wobble=0.06) < 1.0
    spine = np.broadcast_to(np.abs(xx) < rng.uniform(0.07, 0.1), (h, w))
    ribs = np.sin(2 * np.pi * (rng.uniform(5, 7) * yy - 0.8 * np.abs(xx) + 1.5 * xx**2) + rng.uniform(0, 6.3)) > 0.5
    vessels = smooth_noise(rng, (h, w), sigma=max(1.0, min(h, w) / 80))
    opac_field = smooth_noise(rng, (h, w), sigma=max(2.0, min(h, w) / 20))

    img = np.full((h, w), 15.0, dtype=np.float32)
    img[thorax < 1.0] = 150.0
    img[(thorax < 1.0) & (yy > 0.45)] = 170.0  # abdomen under the diaphragm
    img[lungs] = 55.0 + 8.0 * vessels[lungs]
    img[(thorax < 1.0) & ribs] += 8.0
    img[lungs & ribs] += 18.0  # ribs show mostly against the dark lungs
    img[heart] = 175.0
    img[spine & (thorax < 1.0)] = 190.0
    if positive:
        cx = np.abs(xx)
        weight = opac_field + 1.2 * (yy + 0.2) + 1.0 * (cx - 0.4)
        opac = np.zeros((h, w), dtype=np.float32)
        for side in (xx < 0, xx >= 0):  # threshold per lung so that opacities are bilateral
            zone = lungs & side & ~heart
            if zone.any():
                thr = np.quantile(weight[zone], 0.45)
                opac[zone] = 1.0 / (1.0 + np.exp(-(weight[zone] - thr) / 0.25))
        img += 75.0 * ndimage.gaussian_filter(opac, max(1.0, min(h, w) / 100))
    img = ndimage.gaussian_filter(img, max(0.8, min(h, w) / 200))
    img = 255.0 * np.clip(img * gain + offset, 0, 255) / 255.0
    img = 255.0 * (img / 255.0) ** gamma
    img += rng.standard_normal((h, w), dtype=np.float32) * 4.0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), lungs


_EXTS = (".png", ".png", ".jpg", ".png", ".PNG", ".png", ".jpeg", ".png", ".jpg", ".png")


def _names(rng: np.random.Generator, i: int, positive: bool, ext: str) -> tuple[str, str, str]:
    """(patient_id, file name, source) in the style of each COVIDx source."""
    sources = ("ricord", "cohen", "actmed") if positive else ("rsna", "cohen", "actmed")
    source = str(rng.choice(sources, p=(0.5, 0.3, 0.2) if positive else (0.6, 0.2, 0.2)))
    if source == "ricord":
        pid = f"{rng.integers(100000, 999999)}-{i:06d}"
        return pid, f"MIDRC-RICORD-1C-{pid}-{rng.integers(10000, 99999)}-0{ext}", source
    if source == "rsna":
        hexs = "".join(f"{b:02x}" for b in rng.integers(0, 256, 16))
        pid = f"{hexs[:8]}-{hexs[8:12]}-{hexs[12:16]}-{hexs[16:20]}-{hexs[20:]}"
        return pid, pid + ext, source
    if source == "cohen":
        pid = f"{1000 + i}" + ("b" if rng.random() < 0.3 else "")
        stem = f"covid-19-pneumonia-{i}-PA" if positive else f"ARDS-{i}-AP"
        return pid, stem + ext, source
    return f"ANON{100 + i}", f"CR.1.2.840.113564.{rng.integers(10**9, 10**10)}.{i}{ext}", source


def write_lookalike(out: str, cases: int = 20, seed: int = 0, size: int = 256) -> str:
    """Write COVIDx V8B-style ``OUT/{train,test}/<image>`` and ``OUT/{train,test}_COVIDx8B.txt``; return OUT.

    ``cases`` is the number of images: half positive (rounded down), about 20 % (stratified) in test.
    Image sides vary in [0.8, 1.25] x ``size``; extensions mix .png/.jpg/.jpeg/.PNG and modes L/RGB so
    loaders must normalise them. Split lines are ``<patient_id> <filename> <positive|negative> <source>``.
    """
    numbers = case_ids(cases)
    rng = case_rng(seed, 10**6)
    labels = np.zeros(cases, dtype=bool)
    labels[rng.permutation(cases)[: cases // 2]] = True
    n_test = int(round(0.2 * cases)) if cases >= 2 else 0
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    n_test_pos = min(len(pos), n_test // 2 + (n_test % 2 if len(pos) > len(neg) else 0))
    test = set(rng.permutation(pos)[:n_test_pos].tolist())
    test |= set(rng.permutation(neg)[: n_test - n_test_pos].tolist())
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for split in lines:
        os.makedirs(os.path.join(out, split), exist_ok=True)
    for i in numbers:
        crng = case_rng(seed, i)
        ext = _EXTS[i % len(_EXTS)]
        positive = bool(labels[i])
        pid, fname, source = _names(crng, i, positive, ext)
        h, w = (int(round(size * crng.uniform(0.8, 1.25))) for _ in range(2))
        img, _ = _chest_xray(crng, h, w, positive)
        pil = Image.fromarray(img)  # 2D uint8 -> mode "L"
        if i % 3 == 1:
            pil = pil.convert("RGB")
        split = "test" if i in test else "train"
        path = os.path.join(out, split, fname)
        if ext.lower() in (".jpg", ".jpeg"):
            pil.save(path, format="JPEG", quality=92)
        else:
            pil.save(path, format="PNG")
        label = "positive" if positive else "negative"
        lines[split].append(f"{pid} {fname} {label} {source}")
        print(f"[covidx] {i + 1}/{cases} {split}/{fname} {label} {pil.mode} {w}x{h}", flush=True)
    for split, rows in lines.items():
        with open(os.path.join(out, f"{split}_COVIDx8B.txt"), "w") as f:
            f.write("".join(r + "\n" for r in rows))
    return out


def write_dicom_film(grey: np.ndarray, path: str, monochrome1: bool = False, window: tuple[float, float] | None = None,
                     slope: float = 1.0, intercept: float = 0.0) -> str:
    """Write a grey film (uint8, rows x columns) as a digital X-ray DICOM file; return ``path``.

    Stored values are 12-bit detector-like units (``8 * grey + 600``) with a VOI window that displays the
    film's whole range; ``monochrome1`` stores them inverted (high = black), as many radiography systems do.
    A ``grey`` array that is not uint8 is written as the stored values themselves, with the ``window`` and
    rescale given (to test a reader).
    """
    from common.data.dicom_header import new_dicom

    if grey.dtype == np.uint8:
        stored = grey.astype(np.int64) * 8 + 600
        window = window or (600 + 8 * 127.5, 8 * 256.0)
    else:
        stored = np.asarray(grey, dtype=np.int64)
    if monochrome1:
        stored = 4095 - stored
        window = (4095 - window[0], window[1]) if window else None
    ds = new_dicom("1.2.840.10008.5.1.4.1.1.1.1", "DX")  # Digital X-Ray Image Storage, for presentation
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, write_like_original=False)
    return path


# ------------------------------------------------------------------------------- loading and saving
def to_grey(img: Image.Image) -> Image.Image:
    """``PILReader`` converter: one grey channel for any input mode (RGB, RGBA, palette, 1-bit, grey)."""
    return img if img.mode in GREY_MODES else img.convert("L")


def prediction_rows(label_key: str | None = None, pred_key: str = "pred") -> Callable[[Any], list[torch.Tensor]]:
    """``output_transform`` for ``ClassificationSaver``: per image, the class probabilities [+ the label].

    The label (a class index or a one-hot vector) is appended as one trailing number so that the saver,
    which receives only one tensor per image, can write it in its own column.
    """

    def rows(output: Any) -> list[torch.Tensor]:
        items = output if isinstance(output, (list, tuple)) else [output]
        out = []
        for item in items:
            row = torch.as_tensor(item[pred_key]).detach().float().flatten().cpu()
            if label_key is not None:
                label = torch.as_tensor(item[label_key]).detach().float().flatten().cpu()
                index = label.argmax() if label.numel() > 1 else label[0]
                row = torch.cat([row, index.reshape(1)])
            out.append(row)
        return out

    return rows


class PredictionCSV:
    """CSV writer for ``ClassificationSaver(saver=...)``: file name, predicted class, class probabilities.

    ``save_batch`` receives rows built by :func:`prediction_rows` (``len(class_names)`` probabilities,
    then the label when ``with_label``); ``finalize`` writes the table with a header, in input order.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike = "./",
        filename: str = "predictions.csv",
        class_names: Sequence[str] = CLASS_NAMES,
        with_label: bool = False,
    ) -> None:
        self.path = Path(output_dir) / filename
        self.class_names = [str(c) for c in class_names]
        self.with_label = with_label
        self._rows: list[list[Any]] = []

    @property
    def header(self) -> list[str]:
        cols = ["filename", "predicted_class", "predicted_label"]
        cols += [f"probability_{c}" for c in self.class_names]
        return cols + (["label"] if self.with_label else [])

    def save_batch(self, batch_data: torch.Tensor | np.ndarray, meta_data: dict | None = None) -> None:
        data = batch_data.detach().cpu().numpy() if isinstance(batch_data, torch.Tensor) else np.asarray(batch_data)
        k = len(self.class_names)
        expected = k + int(self.with_label)
        if data.ndim != 2 or data.shape[1] != expected:
            raise ValueError(
                f"PredictionCSV expects rows of {expected} numbers ({k} class probabilities"
                f"{' and the label' if self.with_label else ''}); got an array of shape {tuple(data.shape)}."
            )
        names = list(meta_data.get("filename_or_obj", [])) if meta_data else []
        for i, row in enumerate(data):
            probs = row[:k]
            cls = int(np.argmax(probs))
            name = str(names[i]) if i < len(names) else str(len(self._rows))
            record: list[Any] = [name, cls, self.class_names[cls], *(f"{p:.6f}" for p in probs)]
            if self.with_label:
                record.append(int(round(float(row[k]))))
            self._rows.append(record)

    def finalize(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(self.header)
            writer.writerows(self._rows)
        self._rows = []
