"""Helpers for the bundle tests: run a bundle's configs the way model-zoo CI does, on tiny settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

from monai.bundle import ConfigWorkflow

from common import REPO_ROOT

ROOT = REPO_ROOT
BUNDLES = ROOT / "bundles"
SCHEMA = ROOT / "tests" / "bundles" / "meta_schema_20240725.json"


def bundle_dir(name: str) -> Path:
    return BUNDLES / name


def all_bundles() -> list[str]:
    return sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").exists())


def run_workflow(
    bundle: str, configs: list[str], workflow_type: str, bundle_root: Path, configs_dir: Path | None = None, **override
) -> ConfigWorkflow:
    """initialize, check_properties() == [], run, finalize; returns the workflow for inspection.

    ``configs_dir`` runs a copy of the bundle's configs (e.g. after a command rewrote them) instead of the
    committed ones.
    """
    # "auto" picks the thread count from the machine's load, and float rounding (so the learning floors)
    # with it: tests run on one thread unless they ask for another.
    override.setdefault("cpu_threads", 1)
    d = Path(configs_dir) if configs_dir is not None else bundle_dir(bundle) / "configs"
    files = [str(d / c) for c in configs]
    wf = ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(d / "metadata.json"),
        logging_file=str(d / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(bundle_root),
        **override,
    )
    wf.initialize()
    missing = wf.check_properties()  # None would mean no property list was checked (unknown workflow type)
    assert missing == [], f"missing bundle properties: {missing}"
    wf.run()
    wf.finalize()
    return wf


def nfbs_lookalike(root: Path, cases: int, size: int, seed: int = 0) -> dict:
    """Look-alike NFBS volumes under ``root/data`` and their 5-fold data list: the bundle's ``dataset_dir`` and
    ``datalist``."""
    from common.datasets.nfbs import build_datalist, write_lookalike

    dataset_dir = write_lookalike(str(Path(root) / "data"), cases=cases, seed=seed, size=size)
    datalist = str(Path(root) / "nfbs.json")
    build_datalist(dataset_dir, out=datalist)
    return {"dataset_dir": dataset_dir, "datalist": datalist}


def read_json(path: str | os.PathLike) -> dict:
    with open(path) as f:
        return json.load(f)


# the metric evaluate.json scores each post-processing strategy with (metrics.csv names)
STRATEGY_METRICS = {"none": "val_mean_dice", "largest_component": "val_mean_dice_largest_component",
                    "morphological": "val_mean_dice_morphological"}


def read_metrics(eval_dir: str | os.PathLike) -> dict[str, float]:
    """``metrics.csv`` of an evaluation (MONAI's ``MetricsSaver``): one ``name,value`` line per metric."""
    with open(Path(eval_dir) / "metrics.csv") as f:
        return {name: float(value) for name, value in (line.strip().split(",") for line in f if line.strip())}


def read_per_case(eval_dir: str | os.PathLike, metric: str = "val_mean_dice") -> dict[str, float]:
    """Per-case ``mean`` column of ``<metric>_raw.csv`` (``filename,class0,...,mean``), by file name."""
    lines = (Path(eval_dir) / f"{metric}_raw.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[0] == "filename" and header[-1] == "mean", header
    return {row.split(",")[0]: float(row.split(",")[-1]) for row in lines[1:]}


def assert_every_case_counted(eval_dir: str | os.PathLike) -> None:
    """No per-case metric is NaN or inf (the empty-mask rule), and ``empty_masks.csv`` says over how many cases
    the summaries are taken: as many as the per-case CSVs hold."""
    import math

    cases = len(read_per_case(eval_dir))
    for raw in Path(eval_dir).glob("*_raw.csv"):
        values = [float(v) for row in raw.read_text().splitlines()[1:] for v in row.split(",")[1:]]
        assert len(values) >= cases and all(math.isfinite(v) for v in values), raw
    rows = [line.split(",") for line in (Path(eval_dir) / "empty_masks.csv").read_text().splitlines()]
    assert rows[0] == ["key", "cases", "cases_with_an_empty_class"] and "label" in [r[0] for r in rows[1:]], rows
    assert all(int(r[1]) == cases for r in rows[1:]), rows


def assert_strategy_record(eval_dir: str | os.PathLike, record_file: str | os.PathLike) -> dict:
    """The post-processing record of an evaluation holds each strategy's mean Dice as ``metrics.csv`` reports
    it and names the best one (ties: the simplest, in ``STRATEGY_METRICS`` order); ``metrics.csv``'s mean
    Dice is the mean of the per-case CSV. Returns the record."""
    import numpy as np
    import pytest

    summary, record = read_metrics(eval_dir), read_json(record_file)
    assert set(record["mean_dice"]) == set(STRATEGY_METRICS), record
    for strategy, metric in STRATEGY_METRICS.items():
        assert record["mean_dice"][strategy] == pytest.approx(summary[metric], abs=1e-6), (strategy, record)
        per_case = read_per_case(eval_dir, metric)
        assert summary[metric] == pytest.approx(float(np.mean(list(per_case.values()))), abs=1e-5), metric
    assert_every_case_counted(eval_dir)
    order = list(STRATEGY_METRICS)
    assert record["strategy"] == max(order, key=lambda s: (record["mean_dice"][s], -order.index(s))), record
    return record


def assert_inference_applies(wf: ConfigWorkflow, strategy: str) -> None:
    """An inference workflow read ``strategy`` from the record and its post-processing applies exactly it."""
    from common.inference.postprocessing import ApplyPostprocessingd

    assert wf.parser.get_parsed_content("postprocessing_strategy") == strategy
    applied = [t for t in wf.parser.get_parsed_content("postprocessing").transforms
               if isinstance(t, ApplyPostprocessingd)]
    assert [t.strategy for t in applied] == [strategy], applied


def assert_training_refuses(
    bundle: str, root: Path, bad_file: str, words: str, configs_dir: Path | None = None, **override
) -> str:
    """Training on data with ``bad_file`` broken stops before anything is written: the data check raises a
    ``DataCheckError`` whose problem for ``bad_file`` is one sentence containing ``words``, and a
    ``models/model.pt`` from an earlier run is left as it was. Returns that sentence."""
    import pytest

    from common.data.datacheck import DataCheckError

    models = Path(root) / "models"
    models.mkdir(parents=True)
    (models / "model.pt").write_bytes(b"weights of an earlier run")
    with pytest.raises(Exception) as info:
        run_workflow(bundle, ["train.json"], "train", root, configs_dir=configs_dir, epochs=1, **override)
    err = info.value
    while err is not None and not isinstance(err, DataCheckError):
        err = err.__cause__ or err.__context__
    assert err is not None, f"expected a DataCheckError, got {info.value!r}"
    sentence = next(p for p in err.problems if bad_file in p)
    assert words in sentence and sentence.count(". ") == 0, sentence  # one sentence, naming the file
    assert (models / "model.pt").read_bytes() == b"weights of an earlier run"
    assert sorted(os.listdir(models)) == ["model.pt"]
    return sentence


# ------------------------------------------------------------------------------------------------- engines
# ``pocket engines`` on the tests' tiny models: one thread, a small calibration set.
ENGINE_SETTINGS = {"cpu_threads": 1, "calibration_cases": 4, "calibration_samples": 16}
ENGINE_LOGGER = "common.engines.runtime"


def run_engines(bundle: str, data: dict, trained_root: Path, root: Path, **override) -> dict:
    """``pocket engines`` on a copy of a trained root's ``models/`` in ``root`` (the trained root itself stays
    without engine.json: its ``engine: "auto"`` inferences keep running with torch). ``bundle`` may be a bundle
    folder (a copy of the configs). Returns the root, the command's table and the record it wrote."""
    import shutil

    from common.engines.choose import engines

    root = Path(root)
    shutil.copytree(Path(trained_root) / "models", root / "models")
    table = engines(bundle, data["dataset_dir"], data["datalist"], bundle_root=str(root),
                    **{**ENGINE_SETTINGS, **override})
    return {"root": root, "table": table, "record": read_json(root / "models" / "engine.json")}


def assert_engine_record(exported: dict, calibration_cases: int = ENGINE_SETTINGS["calibration_cases"]) -> dict:
    """The record ``pocket engines`` wrote: made from this model.pt, every export it lists exists, every engine
    scored, the chosen one is the fastest within the tolerance of torch, the INT8 IR runs int8 convolutions and
    the calibration used the asked number of training cases. Returns the record."""
    from common.engines.quantize import quantized_operations
    from common.engines.record import ENGINES, EXPORT_FILES, file_sha256

    models, record = Path(exported["root"]) / "models", exported["record"]
    assert record["model_sha256"] == file_sha256(models / "model.pt")
    assert record["exports"] == EXPORT_FILES, record["exports"]  # openvino and nncf are installed here
    for engine, name in record["exports"].items():
        assert (models / name).is_file(), engine
        if name.endswith(".xml"):
            assert (models / name).with_suffix(".bin").is_file(), engine  # the IR's weights
    scores = record["scores"]
    assert list(scores) == list(ENGINES), scores
    assert all(0.0 <= s["metric"] <= 1.0 and s["seconds_per_case"] > 0 for s in scores.values()), scores
    floor = scores["torch"]["metric"] - record["tolerance"]
    good = [e for e in ENGINES if scores[e]["metric"] >= floor]
    assert record["chosen"] == min(good, key=lambda e: scores[e]["seconds_per_case"]), scores
    assert f"inference with engine 'auto' uses {record['chosen']}" in exported["table"]
    counts = quantized_operations(models / EXPORT_FILES["openvino_int8"])
    assert counts["int8"] > 0, counts
    assert record["int8_convolutions"] == counts
    calibration = record["calibration"]
    assert calibration["cases"] == calibration_cases, calibration
    assert calibration["samples"] == min(ENGINE_SETTINGS["calibration_samples"], calibration["inputs_seen"]) > 0
    return record


def engine_used(wf: ConfigWorkflow) -> str:
    """The engine an inference workflow's evaluator ran its network with."""
    return getattr(wf.parser.get_parsed_content("evaluator").network, "engine", "torch")


class engine_log:
    """Context manager: the records of ``common.engines.runtime`` (INFO and up) go to pytest's ``caplog``.

    The bundles' ``logging.conf`` (applied by each workflow) replaces the root logger's handlers, caplog's
    among them, so the handler is attached to the engines' logger itself."""

    def __init__(self, caplog) -> None:
        import logging

        self.handler, self.logger = caplog.handler, logging.getLogger(ENGINE_LOGGER)

    def __enter__(self) -> list:
        self.level = self.logger.level
        self.logger.setLevel("INFO")
        self.logger.addHandler(self.handler)
        return self.handler.records

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


def change_checkpoint(ckpt: str | os.PathLike, delta: float = 0.01) -> str:
    """Add ``delta`` to the first floating-point weight of ``ckpt`` (a retrained model), saved in the same
    format (a bare state dict or ``{"model": state_dict, ...}``). Returns the changed tensor's name."""
    import torch

    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = saved["model"] if isinstance(saved.get("model"), dict) else saved
    name = next(k for k, v in state.items() if k.endswith("weight") and v.is_floating_point())
    state[name] = state[name] + delta
    torch.save(saved, ckpt)
    return name


def agreement(a, b) -> float:
    """Share of voxels where two label maps are equal (same shape required)."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.mean(a == b))


def assert_fp32_engines_agree(preds: dict, floor: float = 0.999) -> None:
    """``preds[engine][name]`` label maps: ONNX Runtime's and OpenVINO fp32's agree with torch's on >= ``floor``
    of the voxels, for every output."""
    for engine in ("onnxruntime", "openvino"):
        assert preds[engine].keys() == preds["torch"].keys(), engine
        for name, torch_map in preds["torch"].items():
            assert agreement(preds[engine][name], torch_map) >= floor, (engine, name)


# ------------------------------------------------------------------------------------------------- formats
def write_dicom_series(nifti_file: str | os.PathLike, folder: str | os.PathLike, scale: float | None = 1000.0,
                       modality: str = "MR") -> str:
    """The volume of a NIfTI file as a DICOM series in ``folder`` (one file per axial slice, int16 values of
    ``voxels * scale / max``, or the voxels themselves when ``scale`` is None, as CT's Hounsfield units are;
    the geometry in LPS patient coordinates), as a scanner export would hold it."""
    import nibabel as nib
    import numpy as np
    from pydicom.uid import generate_uid

    from common.data.dicom_header import new_dicom

    img = nib.load(nifti_file)
    data = np.asarray(img.dataobj, dtype=np.float64)
    if scale is not None:
        data = data * scale / max(float(np.abs(data).max()), 1e-12)
    values = np.round(data).astype(np.int16)
    storage = {"MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}[modality]  # Image Storage
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    cols, rows = lps[:3, 0], lps[:3, 1]  # DICOM columns advance along the array's i axis, rows along j
    spacing_c, spacing_r = float(np.linalg.norm(cols)), float(np.linalg.norm(rows))
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(data.shape[2]):
        ds = new_dicom(storage, modality)
        ds.PatientID = "lookalike"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [float(v) for v in lps[:3, :3] @ [0, 0, k] + lps[:3, 3]]
        ds.ImageOrientationPatient = [float(v) for v in (*cols / spacing_c, *rows / spacing_r)]
        ds.PixelSpacing = [spacing_r, spacing_c]
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(values[:, :, k].T).tobytes()
        ds.save_as(str(folder / f"IM{k + 1:04d}.dcm"), write_like_original=False)
    return str(folder)


def write_itk_copy(nifti_file: str | os.PathLike, out_file: str | os.PathLike) -> str:
    """The NIfTI file rewritten by ITK in the format of ``out_file``'s suffix (NRRD, MHA, ...), geometry kept."""
    import itk

    itk.imwrite(itk.imread(str(nifti_file)), str(out_file))
    return str(out_file)


# ------------------------------------------------------------------------------------------ what users see
def assert_tensorboard_tags(eval_dir: str | os.PathLike, epochs: int, val_interval: int,
                            train_metric: str = "train_mean_dice", val_metric: str = "val_mean_dice",
                            images: bool = True) -> dict:
    """A training wrote TensorBoard events into ``eval_dir`` (read back with TensorBoard's own reader):
    ``train_loss`` per iteration, the training metric and ``lr`` per epoch, the validation metric at every
    validation, and image / label / prediction slices of the validation cases. Returns the scalar tags' steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(eval_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in tags["scalars"]}
    assert {"train_loss", train_metric, val_metric, "lr"} <= set(steps), tags["scalars"]
    assert steps["lr"] == steps[train_metric] == list(range(1, epochs + 1)), steps
    assert steps[val_metric] == list(range(val_interval, epochs + 1, val_interval)), steps
    assert len(steps["train_loss"]) >= epochs and steps["train_loss"] == sorted(steps["train_loss"])
    if images:
        for key in ("image", "label", "pred"):
            assert f"val_{key}/0" in tags["images"], tags["images"]
            assert [e.step for e in events.Images(f"val_{key}/0")] == steps[val_metric]
    return steps


def assert_case_pictures(eval_dir: str | os.PathLike, metric: str = "val_mean_dice") -> dict:
    """An evaluation wrote ``cases.png`` and ``boxplot.png``, and the worst, median and best case that
    ``cases.png`` shows are those of the per-case CSV (ties: the first in the CSV). Returns the picture's record."""
    from PIL import Image

    from common.metrics.pictures import pick_cases, read_description

    per_case = read_per_case(eval_dir, metric)
    names, scores = list(per_case), list(per_case.values())
    shown = read_description(Path(eval_dir) / "cases.png")
    assert shown["metric"] == metric
    for rank, index in pick_cases(scores).items():
        assert shown[rank]["id"] == names[index], (rank, shown, per_case)
        assert abs(shown[rank]["score"] - scores[index]) < 1e-4, (rank, shown, per_case)
    for png in ("cases.png", "boxplot.png"):
        with Image.open(Path(eval_dir) / png) as image:
            assert min(image.size) >= 300, (png, image.size)  # drawn, at a readable size
    return shown
