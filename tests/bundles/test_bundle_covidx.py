"""COVIDx chest X-ray classification bundle end to end on look-alike data: learns, evaluates, infers, resumes,
runs under torchrun, refuses bad input, runs the CPU engines."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import (
    ROOT,
    assert_engine_record,
    assert_tensorboard_tags,
    assert_training_refuses,
    bundle_dir,
    change_checkpoint,
    engine_log,
    engine_used,
    read_json,
    run_engines,
    run_workflow,
)
from monai.bundle import ConfigParser
from PIL import Image

from common.datasets.covidx import build_datalist as covidx
from common.datasets.covidx import write_lookalike as write_covidx
from common.engines import ENGINES
from common.networks import count_parameters

BUNDLE = "covidx_cxr_classification"
# Look-alike films are written at about 128 px and resized to 64 px (instead of 256) to keep the tests fast.
TINY = {"image_size": [64, 64], "num_workers": 0, "batch_size": 8}
EPOCHS = 20


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("covidx")
    ds = write_covidx(str(root / "data"), cases=80, seed=0, size=128)
    datalist = str(root / "covidx8b.json")
    covidx(ds, out=datalist)
    return {"dataset_dir": ds, "datalist": datalist}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """One short CPU training shared by the learning, evaluation, inference and resume tests."""
    root = tmp_path_factory.mktemp("covidx_bundle")
    wf = run_workflow(BUNDLE, ["train.json"], "train", root, **data, **TINY, epochs=EPOCHS, learning_rate=1e-3)
    per_epoch = len(wf.parser.get_parsed_content("train#dataloader"))
    state = wf.parser.get_parsed_content("validate#evaluator").state
    return {"root": root, "best_val_auc": state.best_metric, "last_val_accuracy": state.metrics["val_accuracy"],
            "per_epoch": per_epoch}


def _labels(datalist: str, section: str) -> dict[str, int]:
    return {os.path.basename(e["image"]): e["label"] for e in read_json(datalist)[section]}


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _check_probabilities(rows: list[dict]) -> None:
    for r in rows:
        p0, p1 = float(r["probability_negative"]), float(r["probability_positive"])
        assert 0.0 <= p1 <= 1.0 and abs(p0 + p1 - 1.0) < 1e-4
        assert int(r["predicted_class"]) == int(p1 > p0)
        assert r["predicted_label"] == ("positive" if p1 > p0 else "negative")


def test_pocket_switch_gives_the_table_ii_networks():
    parser = ConfigParser()
    parser.read_config(str(bundle_dir(BUNDLE) / "configs" / "train.json"))
    assert parser["arch"] == "classifier" and parser["pocket"] is True
    assert count_parameters(parser.get_parsed_content("network_def")) == 21_074
    parser["pocket"] = False
    assert count_parameters(parser.get_parsed_content("network_def", lazy=False)) == 1_178_994


def test_grey_and_rgb_films_load_as_one_channel(data):
    parser = ConfigParser()
    parser.read_config(str(bundle_dir(BUNDLE) / "configs" / "inference.json"))
    parser["image_size"] = [64, 64]
    preprocessing = parser.get_parsed_content("preprocessing")
    files = [os.path.join(data["dataset_dir"], "train", f) for f in sorted(os.listdir(
        os.path.join(data["dataset_dir"], "train")))]
    modes = {}
    for f in files:
        with Image.open(f) as im:
            modes.setdefault(im.mode, f)
    assert set(modes) == {"L", "RGB"}  # the look-alike set mixes both, as COVIDx does
    for f in modes.values():
        image = preprocessing({"image": f})["image"]
        assert tuple(image.shape) == (1, 64, 64)
        assert abs(float(image.mean())) < 1e-3 and abs(float(image.std()) - 1.0) < 1e-2  # z-score


def test_training_learns_covid_positive_films(trained):
    assert trained["best_val_auc"] >= 0.9
    assert trained["last_val_accuracy"] >= 0.8  # AUC alone can be high while every film gets one class
    models = trained["root"] / "models"
    assert (models / "model.pt").exists()
    assert (models / f"last_checkpoint_epoch={EPOCHS}.pt").exists()


def test_training_writes_tensorboard_events_with_the_named_tags(trained):
    assert_tensorboard_tags(trained["root"] / "eval", epochs=EPOCHS, val_interval=1, train_metric="train_accuracy",
                            val_metric="val_auc", images=False)


@pytest.mark.parametrize("split,section", [("val", "training"), ("test", "testing")])
def test_evaluate_writes_the_summary_and_one_row_per_image(data, trained, split, section):
    root = trained["root"]
    overrides = {"eval_split": split} if split != "val" else {}  # val is the default
    run_workflow(BUNDLE, ["train.json", "evaluate.json"], "train", root, **data, **TINY, **overrides)
    out = root / "eval" / split
    summary = dict(line.strip().split(",") for line in open(out / "metrics.csv"))
    assert set(summary) == {"auc", "accuracy", "sensitivity", "specificity"}
    assert float(summary["auc"]) >= 0.9
    assert float(summary["accuracy"]) >= 0.8
    rows = _rows(out / "predictions.csv")
    labels = _labels(data["datalist"], section)
    if split == "val":
        fold0 = {os.path.basename(e["image"]) for e in read_json(data["datalist"])["training"] if e["fold"] == 0}
        labels = {k: v for k, v in labels.items() if k in fold0}
    assert sorted(os.path.basename(r["filename"]) for r in rows) == sorted(labels)
    _check_probabilities(rows)
    for r in rows:
        assert int(r["label"]) == labels[os.path.basename(r["filename"])]
    accuracy = sum(int(r["predicted_class"]) == int(r["label"]) for r in rows) / len(rows)
    assert abs(accuracy - float(summary["accuracy"])) < 1e-4
    positives = [r for r in rows if r["label"] == "1"]
    sensitivity = sum(r["predicted_class"] == "1" for r in positives) / len(positives)
    assert abs(sensitivity - float(summary["sensitivity"])) < 1e-4
    # the pictures: the ROC's AUC is the evaluation's, the confusion matrix counts the table's rows
    from common.metrics.pictures import read_description

    roc = read_description(out / "roc.png")
    assert roc["cases"] == len(rows) and abs(roc["auc"]["positive"] - float(summary["auc"])) < 1e-4, roc
    matrix = read_description(out / "confusion.png")["matrix"]
    for ref in (0, 1):
        for pred in (0, 1):
            assert matrix[ref][pred] == sum(int(r["label"]) == ref and int(r["predicted_class"]) == pred
                                            for r in rows), (ref, pred, matrix)


def test_inference_writes_a_prediction_csv_for_a_folder(data, trained, tmp_path):
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json"], "infer", trained["root"], dataset_dir=data["dataset_dir"],
                 output_dir=str(out), **TINY)
    rows = _rows(out / "predictions.csv")
    labels = _labels(data["datalist"], "testing")  # the default pattern reads test/
    assert sorted(os.path.basename(r["filename"]) for r in rows) == sorted(labels)
    _check_probabilities(rows)
    accuracy = sum(int(r["predicted_class"]) == labels[os.path.basename(r["filename"])] for r in rows) / len(rows)
    assert accuracy >= 0.8  # chance is 0.5 on the balanced look-alike test split


def test_a_dicom_export_of_a_film_gets_the_prediction_of_its_png(data, trained, tmp_path):
    """The same film as PNG, as a MONOCHROME2 and as a MONOCHROME1 DICOM (12-bit, VOI window): one probability."""
    from common.datasets.covidx import to_grey, write_dicom_film

    films = tmp_path / "films"
    (films / "test").mkdir(parents=True)
    sources = sorted((Path(data["dataset_dir"]) / "test").iterdir())[:2]
    for src in sources:
        grey = np.asarray(to_grey(Image.open(src)))
        Image.fromarray(grey).save(films / "test" / f"{src.stem}.png")
        write_dicom_film(grey, str(films / "test" / f"{src.stem}_mono2.dcm"))
        write_dicom_film(grey, str(films / "test" / f"{src.stem}_mono1.DCM"), monochrome1=True)
    out = tmp_path / "pred"
    run_workflow(BUNDLE, ["inference.json"], "infer", trained["root"], dataset_dir=str(films), output_dir=str(out),
                 engine="torch", **TINY)
    rows = {os.path.basename(r["filename"]): float(r["probability_positive"]) for r in _rows(out / "predictions.csv")}
    assert len(rows) == 6
    for src in sources:
        png = rows[f"{src.stem}.png"]
        for kind in ("mono2.dcm", "mono1.DCM"):
            assert abs(rows[f"{src.stem}_{kind}"] - png) < 0.01, (src.stem, kind, rows)


def test_interrupted_training_resumes_where_it_stopped(data, trained, tmp_path):
    shutil.copytree(trained["root"] / "models", tmp_path / "models")
    wf = run_workflow(BUNDLE, ["train.json"], "train", tmp_path, **data, **TINY, epochs=EPOCHS + 1)
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == EPOCHS + 1
    assert trainer.state.iteration == (EPOCHS + 1) * trained["per_epoch"]  # only the last epoch ran
    assert (tmp_path / "models" / f"last_checkpoint_epoch={EPOCHS + 1}.pt").exists()


def _break(path: str, how: str) -> None:
    if how == "missing":
        os.remove(path)
    elif how == "unreadable":
        with open(path, "wb") as f:
            f.write(b"not an image")
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how,words", [("missing", "does not exist"), ("unreadable", "cannot be read")])
def test_bad_input_is_refused_before_training(data, tmp_path, how, words):
    ds = tmp_path / "covidx"
    shutil.copytree(data["dataset_dir"], ds)
    entries = read_json(data["datalist"])["training"]
    victim = next(e for e in entries if e["fold"] != 0)  # a training image
    bad_file = os.path.normpath(str(ds / victim["image"]))
    _break(bad_file, how)
    assert_training_refuses(BUNDLE, tmp_path / "bundle", bad_file, words,
                            dataset_dir=str(ds), datalist=data["datalist"], **TINY)


def test_multi_gpu_config_trains_with_two_processes_on_cpu(data, tmp_path):
    """torchrun, 2 processes, gloo backend on CPU: one epoch trains and rank 0 saves the checkpoints."""
    configs = str(bundle_dir(BUNDLE) / "configs")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "training",
        "--config_file", f"['{configs}/train.json','{configs}/multi_gpu_train.json']",
        "--meta_file", f"{configs}/metadata.json", "--logging_file", f"{configs}/logging.conf",
        "--bundle_root", str(tmp_path), "--dataset_dir", data["dataset_dir"], "--datalist", data["datalist"],
        "--image_size", "[32,32]", "--num_workers", "0", "--batch_size", "8", "--epochs", "1", "--val_interval", "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "val_auc" in proc.stdout + proc.stderr
    assert (tmp_path / "models" / "model.pt").exists()
    assert (tmp_path / "models" / "last_checkpoint_epoch=1.pt").exists()


# ------------------------------------------------------------------------------------------------- engines
@pytest.fixture(scope="module")
def exported(data, trained, tmp_path_factory):
    """pocket engines on a copy of the trained model (the trained root keeps inferring with torch)."""
    return run_engines(BUNDLE, data, trained["root"], tmp_path_factory.mktemp("covidx_engines"), **TINY)


def _auc(rows: dict[str, dict], labels: dict[str, int]) -> float:
    """Area under the ROC curve of the rows' positive probabilities (ties count one half)."""
    pos = [float(r["probability_positive"]) for n, r in rows.items() if labels[n] == 1]
    neg = [float(r["probability_positive"]) for n, r in rows.items() if labels[n] == 0]
    return sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))


def _infer(root, dataset_dir, out, engine, **override) -> tuple:
    wf = run_workflow(BUNDLE, ["inference.json"], "infer", root, dataset_dir=str(dataset_dir), output_dir=str(out),
                      engine=engine, **TINY, **override)
    return wf, {os.path.basename(r["filename"]): r for r in _rows(out / "predictions.csv")}


def test_engines_command_records_the_fastest_good_engine(data, exported):
    record = assert_engine_record(exported)
    fold0 = sum(e["fold"] == 0 for e in read_json(data["datalist"])["training"])
    assert record["metric"] == "auc" and record["cases_scored"] == fold0  # every validation film
    assert record["input_shape"] == [1, 1, 64, 64] and record["scores"]["torch"]["metric"] >= 0.9
    assert "bytes_per_voxel" not in record  # 2D: no whole-volume passes to decide


def test_inference_with_each_engine_writes_one_row_per_film_and_fp32_agrees_with_torch(data, exported, tmp_path):
    rows = {}
    for engine in ENGINES:
        # torch in fp32: where the CPU has native bf16, "auto" runs torch under bf16 autocast, whose rounding
        # moves these probabilities by ~4e-3 (the exports are fp32 whatever bf16 says)
        wf, rows[engine] = _infer(exported["root"], data["dataset_dir"], tmp_path / engine, engine, bf16=False)
        assert engine_used(wf) == engine  # the export ran, not the torch fallback
        assert sorted(rows[engine]) == sorted(_labels(data["datalist"], "testing")), engine  # one row per film
        _check_probabilities(list(rows[engine].values()))
    for engine in ("onnxruntime", "openvino"):
        for name, t in rows["torch"].items():
            r = rows[engine][name]
            assert r["predicted_class"] == t["predicted_class"], (engine, name)
            for key in ("probability_negative", "probability_positive"):
                assert abs(float(r[key]) - float(t[key])) <= 1e-4, (engine, name, r[key], t[key])
    auc = {e: _auc(rows[e], _labels(data["datalist"], "testing")) for e in rows}
    assert auc["torch"] >= 0.9 and auc["openvino_int8"] >= auc["torch"] - 0.01, auc  # INT8 ranks films as well


def test_export_older_than_the_checkpoint_is_not_used(data, exported, tmp_path, caplog):
    """A retrained model.pt: inference with engine openvino says the export is older and runs with torch."""
    root = tmp_path / "bundle"
    shutil.copytree(exported["root"] / "models", root / "models")
    change_checkpoint(root / "models" / "model.pt")
    with engine_log(caplog) as records:
        wf, stale = _infer(root, data["dataset_dir"], tmp_path / "openvino", "openvino")
    assert engine_used(wf) == "torch"
    [line] = [r.getMessage() for r in records if "not used" in r.getMessage()]
    assert line.startswith("engine openvino not used: ") and "older" in line, line
    _, torch_run = _infer(root, data["dataset_dir"], tmp_path / "torch", "torch")
    assert stale == torch_run
