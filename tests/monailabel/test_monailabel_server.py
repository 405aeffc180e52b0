"""A real MONAI Label server (monailabel 0.8.5) with every bundle, spoken to over HTTP.

The set-up creates the MONAI Label environment with the command users run (``python -m common monailabel
--setup_only``; minutes on first use, a hash check after), trains the five bundles (and the BraTS regions variant)
briefly on look-alike data, writes a studies folder of unlabelled look-alike images and starts
``python -m common monailabel --studies DIR`` on 127.0.0.1 and a free port; it is stopped at the end.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
from bundle_helpers import ENGINE_SETTINGS, nfbs_lookalike, read_json, run_workflow
from bundle_helpers import ROOT as REPO

from common.datasets.brats import lookalike_datalist, stack_cases
from common.datasets.brats import write_lookalike as write_brats
from common.datasets.covidx import build_datalist as covidx_list
from common.datasets.covidx import write_lookalike as write_covidx
from common.datasets.lits import write_lookalike as write_lits
from common.datasets.prostate import build_datalist as prostate_list
from common.datasets.prostate import write_lookalike as write_prostate
from common.engines.choose import engines
from common.training.lock import release_checkpoint_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

NFBS, LITS, BRATS = "nfbs_brain_mri_segmentation", "lits_liver_ct_segmentation", "brats_tumor_mri_segmentation"
PROSTATE, COVIDX = "prostate_mri_segmentation", "covidx_cxr_classification"
SEGMENTERS = (NFBS, LITS, BRATS, PROSTATE)
BRATS_IDS = [1, 2, 3, 4, 5, 6, 7, 8]
TIMINGS: dict[str, float] = {}  # seconds, and the Dice scores, printed at the end for the record


def _timed(name: str, start: float) -> None:
    TIMINGS[name] = round(time.perf_counter() - start, 1)
    print(f"[monailabel test] {name}: {TIMINGS[name]} s", flush=True)


@pytest.fixture(scope="module")
def environment() -> None:
    """The MONAI Label environment, created by the users' command (cached in .venv-monailabel)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "common", "monailabel", "--setup_only"], cwd=REPO, check=True,
                   timeout=1800)
    _timed("environment", start)


def _lits_list(ds: str, root: Path, cases: int) -> str:
    from common.data.datalists import assign_folds, save_datalist

    folds = assign_folds(range(cases))
    entries = [{"image": f"volume-{n}.nii", "label": f"segmentation-{n}.nii", "fold": folds[n]} for n in range(cases)]
    datalist = {"name": "LiTS look-alike", "labels": {"0": "background", "1": "liver", "2": "tumour"},
                "num_folds": 5, "training": entries, "testing": []}
    return str(save_datalist(datalist, root / "lits.json"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Look-alike data of the five tasks and one short training each: ``models_root/<bundle>/models``."""
    root = tmp_path_factory.mktemp("monailabel_data")
    models = tmp_path_factory.mktemp("monailabel_models")
    start = time.perf_counter()
    nfbs = nfbs_lookalike(root / "nfbs", cases=8, size=40)
    run_workflow(NFBS, ["train.json"], "train", models / NFBS, **nfbs, patch_size=[32, 32, 32], init_filters=16,
                 num_workers=0, epochs=12, val_interval=4, learning_rate=3e-3, num_samples=4)
    engines(NFBS, nfbs["dataset_dir"], nfbs["datalist"], bundle_root=str(models / NFBS), **ENGINE_SETTINGS)
    lits_ds = write_lits(str(root / "lits"), cases=8, seed=0, size=48)
    lits = {"dataset_dir": lits_ds, "datalist": _lits_list(lits_ds, root, 8)}
    run_workflow(LITS, ["train.json"], "train", models / LITS, **lits, patch_size=[32, 32, 32], init_filters=16,
                 num_workers=0, epochs=12, val_interval=4, learning_rate=3e-3, num_samples=4)
    brats_ds = write_brats(str(root / "brats"), seed=0, size=32, ids=BRATS_IDS)
    brats = {"dataset_dir": brats_ds, "datalist": lookalike_datalist(brats_ds, str(root / "brats.json"))}
    for overlay in ([], ["regions.json"]):
        run_workflow(BRATS, ["train.json", *overlay], "train", models / BRATS, **brats, patch_size=[16, 16, 16],
                     init_filters=8, num_workers=0, epochs=16, val_interval=4, learning_rate=5e-3, num_samples=4)
    prostate_ds = write_prostate(str(root / "prostate"), cases=10, seed=0, size=64)
    prostate_list(prostate_ds, out=str(root / "prostate.json"))
    prostate = {"dataset_dir": prostate_ds, "datalist": str(root / "prostate.json")}
    run_workflow(PROSTATE, ["train.json"], "train", models / PROSTATE, **prostate, image_size=64, input_size=32,
                 features=8, num_workers=0, epochs=30, val_interval=5, learning_rate=5e-3)
    covidx_ds = write_covidx(str(root / "covidx"), cases=80, seed=0, size=128)
    covidx_list(covidx_ds, out=str(root / "covidx.json"))
    covidx = {"dataset_dir": covidx_ds, "datalist": str(root / "covidx.json")}
    run_workflow(COVIDX, ["train.json"], "train", models / COVIDX, **covidx, image_size=[64, 64], num_workers=0,
                 batch_size=8, epochs=20, learning_rate=1e-3)
    _timed("training the six models", start)
    for bundle in models.iterdir():
        for ckpt_dir in (bundle / "models", bundle / "models" / "regions"):
            release_checkpoint_dir(ckpt_dir)  # the server's /train takes the lock next
    return {"models_root": models, "nfbs": nfbs, "lits": lits, "brats": brats, "prostate": prostate,
            "covidx": covidx, "root": root}


def _image_id(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


@pytest.fixture(scope="module")
def studies(trained, tmp_path_factory) -> dict:
    """A studies folder of unlabelled images (all five tasks); the labels are kept aside for upload."""
    folder = tmp_path_factory.mktemp("studies")
    cases: dict[str, list[dict]] = {}

    def add(task: str, image: str | Path, label: str | Path | None) -> None:
        dest = folder / Path(image).name
        shutil.copy(image, dest)
        cases.setdefault(task, []).append({"id": _image_id(dest), "image": dest, "label": label})

    nfbs_dir = Path(trained["nfbs"]["dataset_dir"])
    for subject in sorted(p for p in nfbs_dir.iterdir() if p.is_dir())[:4]:
        image = next(subject.glob("*_T1w.nii.gz"))
        add(NFBS, image, next(subject.glob("*_brainmask.nii.gz")))
    lits = Path(trained["lits"]["dataset_dir"])
    for n in (0, 1):
        add(LITS, lits / f"volume-{n}.nii", lits / f"segmentation-{n}.nii")
    stacked = trained["root"] / "brats_stacked"
    for image in stack_cases(trained["brats"]["dataset_dir"], str(stacked))[:1]:
        add(BRATS, image, stacked / "labels" / "final" / Path(image).name)
    prostate = Path(trained["prostate"]["dataset_dir"])
    add(PROSTATE, prostate / "imagesTr" / "prostate_00.nii.gz", prostate / "labelsTr" / "prostate_00.nii.gz")
    covidx = Path(trained["covidx"]["dataset_dir"])
    for image in sorted((covidx / "test").iterdir())[:2]:
        add(COVIDX, image, None)
    return {"folder": folder, "cases": cases}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(environment, trained, studies, tmp_path_factory):
    """``python -m common monailabel --studies DIR`` on a free port; yields its URL, stops it afterwards."""
    port = _free_port()
    log = tmp_path_factory.mktemp("monailabel_log") / "server.log"
    env = dict(os.environ, MONAI_LABEL_DATASTORE_AUTO_RELOAD="false")
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "common", "monailabel", "--studies", str(studies["folder"]), "--port", str(port),
             "--models_root", str(trained["models_root"])],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, f"the server stopped: {log.read_text()[-4000:]}"
            try:
                if requests.get(f"{url}/info/", timeout=10).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"no answer from the server: {log.read_text()[-4000:]}"
            time.sleep(2)
        _timed("server start", start)
        yield {"url": url, "log": log, "proc": proc}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        print(f"[monailabel test] timings: {TIMINGS}", flush=True)


def _log_tail(server: dict, chars: int = 6000) -> str:
    return "server log, last lines:\n" + server["log"].read_text()[-chars:]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def _infer_mask(server: dict, model: str, case: dict, tmp_path: Path) -> nib.Nifti1Image:
    start = time.perf_counter()
    r = requests.post(f"{server['url']}/infer/{model}", params={"image": case["id"], "output": "image"}, timeout=600)
    assert r.status_code == 200, f"{model}: HTTP {r.status_code} {r.text[:2000]}\n{_log_tail(server)}"
    _timed(f"/infer {model}", start)
    path = tmp_path / (model + (".nii.gz" if r.content[:2] == b"\x1f\x8b" else ".nii"))  # the image's format
    path.write_bytes(r.content)
    return nib.load(path)


def _assert_on_grid_and_close(mask_img: nib.Nifti1Image, case: dict, regions: bool = False) -> float:
    image = nib.load(case["image"])
    label = np.asarray(nib.load(case["label"]).dataobj)
    mask = np.asarray(mask_img.dataobj)
    assert mask.shape == image.shape[:3] == label.shape
    np.testing.assert_allclose(mask_img.affine, image.affine, atol=1e-3)
    if regions:
        assert set(np.unique(mask)) <= {0, 1, 2, 4}  # BraTS label values
    return _dice(mask > 0, label > 0)


def test_info_lists_every_bundle_and_the_trainers(server):
    info = requests.get(f"{server['url']}/info/", timeout=60).json()
    assert {NFBS, LITS, BRATS, PROSTATE, COVIDX, f"{BRATS}_regions"} <= set(info["models"])
    # variants without weights, or whose weights are another recipe's (short ones share models/), are left out
    assert not {f"{LITS}_cascade", f"{LITS}_slab", f"{LITS}_short_2d", f"{NFBS}_short"} & set(info["models"])
    assert info["models"][COVIDX]["type"] == "classification"
    assert info["models"][NFBS]["training_params"]["init_filters"] == 16  # served as trained
    assert set(info["trainers"]) == set(SEGMENTERS)
    assert {f"{NFBS}_{e}" for e in ("onnxruntime", "openvino", "openvino_int8")} <= set(info["models"])
    assert info["models"][f"{NFBS}_openvino_int8"]["engine"] == "openvino_int8"


def test_infer_with_an_engine_named_by_the_model(server, trained, studies, tmp_path):
    """``<bundle>_openvino_int8`` runs the INT8 export (``pocket engines``); ``<bundle>`` the engine it chose."""
    case = studies["cases"][NFBS][0]
    chosen = read_json(trained["models_root"] / NFBS / "models" / "engine.json")["chosen"]
    for model, engine in ((f"{NFBS}_openvino_int8", "openvino_int8"), (NFBS, chosen)):
        dice = _assert_on_grid_and_close(_infer_mask(server, model, case, tmp_path), case)
        TIMINGS[f"Dice {model}"] = round(dice, 3)
        assert dice >= 0.8, f"{model}: Dice {dice:.3f}"
        if engine != "torch":
            assert f"engine: {engine} (" in server["log"].read_text()  # the export ran, not the torch fallback


@pytest.mark.parametrize("model", [NFBS, LITS, BRATS, PROSTATE, f"{BRATS}_regions"])
def test_infer_returns_a_mask_on_the_image_grid(server, studies, model, tmp_path):
    task = model.removesuffix("_regions")
    case = studies["cases"][task][0]
    mask = _infer_mask(server, model, case, tmp_path)
    dice = _assert_on_grid_and_close(mask, case, regions=model.endswith("_regions"))
    TIMINGS[f"Dice {model}"] = round(dice, 3)
    assert dice >= 0.8, f"{model}: Dice {dice:.3f} against the look-alike label"


def _bundle_prediction(trained: dict, image: Path, out: Path) -> dict:
    """The bundle's own inference (inference.json) on one image: its predictions.csv row."""
    folder = out / "test"
    folder.mkdir(parents=True)
    shutil.copy(image, folder / image.name)
    run_workflow(COVIDX, ["inference.json"], "infer", trained["models_root"] / COVIDX, dataset_dir=str(out),
                 output_dir=str(out / "eval"), image_size=[64, 64])
    with open(out / "eval" / "predictions.csv", newline="") as f:
        return next(csv.DictReader(f))


def test_infer_classifies_a_radiograph_like_the_bundle(server, trained, studies, tmp_path):
    for case in studies["cases"][COVIDX]:
        start = time.perf_counter()
        r = requests.post(f"{server['url']}/infer/{COVIDX}", params={"image": case["id"], "output": "json"},
                          timeout=300)
        assert r.status_code == 200, r.text[:2000]
        _timed(f"/infer {COVIDX}", start)
        answer = r.json()
        own = _bundle_prediction(trained, case["image"], tmp_path / case["id"])
        assert answer["label"] == own["predicted_label"]
        assert answer["score"] == pytest.approx(float(own[f"probability_{own['predicted_label']}"]), abs=1e-4)
        assert [p["label"] for p in answer["prediction"]] == ["negative", "positive"]


def _upload_label(server: dict, case: dict) -> None:
    with open(case["label"], "rb") as f:
        r = requests.put(f"{server['url']}/datastore/label", params={"image": case["id"], "tag": "final"},
                         files={"label": (Path(case["label"]).name, f)}, timeout=60)
    assert r.status_code == 200, r.text[:2000]


def _train(server: dict, model: str, params: dict) -> dict:
    start = time.perf_counter()
    r = requests.post(f"{server['url']}/train/{model}", json=params, timeout=60)
    assert r.status_code == 200, r.text[:2000]
    deadline = time.monotonic() + 1200
    while True:
        status = requests.get(f"{server['url']}/train/", timeout=60).json()
        if status["status"] not in ("SUBMITTED", "RUNNING"):
            break
        assert time.monotonic() < deadline, status
        time.sleep(3)
    _timed(f"/train {model}", start)
    return status


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_fine_tunes_on_uploaded_labels_and_still_segments(server, trained, studies, tmp_path):
    model_pt = trained["models_root"] / NFBS / "models" / "model.pt"
    before = _digest(model_pt)
    for case in studies["cases"][NFBS][:3]:
        _upload_label(server, case)
    status = _train(server, NFBS, {"max_epochs": 2, "val_split": 0.34, "device": "cpu"})
    assert status["status"] == "DONE", "\n".join(status.get("details", []))
    assert _digest(model_pt) != before  # the weights MONAI Label serves were rewritten
    case = studies["cases"][NFBS][3]  # not uploaded
    dice = _assert_on_grid_and_close(_infer_mask(server, NFBS, case, tmp_path), case)
    TIMINGS["Dice after /train"] = round(dice, 3)
    assert dice >= 0.8, f"after /train: Dice {dice:.3f}"


def test_train_refuses_a_label_with_unknown_values_with_the_data_check_sentence(server, trained, studies):
    model_pt = trained["models_root"] / NFBS / "models" / "model.pt"
    before = _digest(model_pt)
    lits_case = studies["cases"][LITS][0]  # liver 1, tumour 2: NFBS knows 0 and 1 only
    _upload_label(server, lits_case)
    status = _train(server, NFBS, {"max_epochs": 1, "val_split": 0.0, "device": "cpu"})
    details = "\n".join(status.get("details", []))
    assert status["status"] == "ERROR", details
    assert "unexpected label values [2]; expected a subset of [0, 1]" in details, details
    assert f"{lits_case['id']}.nii" in details
    assert _digest(model_pt) == before  # nothing written
    requests.delete(f"{server['url']}/datastore/label", params={"id": lits_case["id"], "tag": "final"}, timeout=60)

