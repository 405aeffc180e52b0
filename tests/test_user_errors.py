"""A problem the user fixes reaches them as one sentence from ``python -m monai.bundle run``, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_helpers import ROOT, bundle_dir, nfbs_lookalike

from common.errors import MissingInputError, UserError, user_error_in

BUNDLE = "nfbs_brain_mri_segmentation"


def bundle_run(tmp_path: Path, workflow: str, config: str, debug: bool = False,
               **override: str) -> subprocess.CompletedProcess:
    configs = bundle_dir(BUNDLE) / "configs"
    cmd = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", str(configs / config),
           "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
           "--bundle_root", str(tmp_path / "bundle")]
    for key, value in override.items():
        cmd += [f"--{key}", value]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "POCKET_DEBUG": "1" if debug else ""}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_truncated_training_file_is_one_sentence_and_exit_status_1(tmp_path: Path) -> None:
    data = nfbs_lookalike(tmp_path, cases=3, size=24)
    ds, datalist = data["dataset_dir"], data["datalist"]
    subject = sorted(os.listdir(ds))[0]
    image = os.path.join(ds, subject, f"sub-{subject}_ses-NFB3_T1w.nii.gz")
    raw = Path(image).read_bytes()
    Path(image).write_bytes(raw[: len(raw) // 2])
    args = {"dataset_dir": ds, "datalist": datalist, "num_workers": "0", "patch_size": "[16,16,16]", "epochs": "1"}
    proc = bundle_run(tmp_path, "training", "train.json", **args)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{image}: cannot be read as an image (" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "(set POCKET_DEBUG=1 for the traceback)"
    assert not (tmp_path / "bundle" / "models" / "model.pt").exists()
    debug = bundle_run(tmp_path, "training", "train.json", debug=True, **args)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "DataCheckError" in debug.stderr


def test_missing_input_folder_at_inference_is_one_sentence(tmp_path: Path) -> None:
    missing = str(tmp_path / "no_such_folder")
    proc = bundle_run(tmp_path, "inferring", "inference.json", dataset_dir=missing, output_dir=str(tmp_path / "out"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"error: {missing}: input folder does not exist." in proc.stderr


def test_the_mark_is_found_through_monai_wrapping() -> None:
    try:
        try:
            raise MissingInputError("x.nii.gz: file does not exist.")
        except FileNotFoundError as inner:  # the ordinary type still catches it
            raise RuntimeError("Failed to evaluate ConfigExpression") from inner
    except RuntimeError as outer:
        found = user_error_in(outer)
    assert isinstance(found, UserError) and str(found) == "x.nii.gz: file does not exist."
    assert user_error_in(RuntimeError("other")) is None
    with pytest.raises(FileNotFoundError):
        raise MissingInputError("y")


def test_one_bad_image_among_good_ones_is_skipped_and_the_run_fails_at_the_end(tmp_path: Path) -> None:
    """Inference predicts every readable image, names each bad one in a sentence, ends with a summary and exit
    status 1, and prints no traceback; every file it wrote is complete."""
    import nibabel as nib
    import numpy as np
    import torch

    from common.networks import get_network
    from common.training.params import save_training_params

    params = {"arch": "unet", "pocket": True, "init_filters": 4, "patch_size": [16, 16, 16], "depth": 2,
              "num_classes": 2, "in_channels": 1}
    models = tmp_path / "bundle" / "models"
    models.mkdir(parents=True)
    torch.manual_seed(0)
    net = get_network("unet", spatial_dims=3, in_channels=1, out_channels=2, init_filters=4, depth=2, pocket=True)
    torch.save(net.state_dict(), models / "model.pt")
    save_training_params(models, params)

    ds = nfbs_lookalike(tmp_path, cases=4, size=20)["dataset_dir"]
    subjects = sorted(os.listdir(ds))
    image = {s: os.path.join(ds, s, f"sub-{s}_ses-NFB3_T1w.nii.gz") for s in subjects}
    truncated, with_nan = image[subjects[1]], image[subjects[2]]
    raw = Path(truncated).read_bytes()
    Path(truncated).write_bytes(raw[: len(raw) // 2])
    img = nib.load(with_nan)
    voxels = np.asarray(img.dataobj).astype(np.float32)
    voxels[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(voxels, img.affine), with_nan)

    out = tmp_path / "out"
    proc = bundle_run(tmp_path, "inferring", "inference.json", dataset_dir=ds, output_dir=str(out), engine="torch")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert f"skipped: {truncated}: cannot be read as an image (" in log
    assert f"skipped: {with_nan}: image has 1 NaN or infinite voxel." in log
    assert proc.stderr.strip().splitlines()[-2] == (
        f"error: 2 of 4 images could not be used and have no prediction ({truncated}, {with_nan}; each reason is "
        "logged above); the other 2 were predicted.")
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"sub-{s}_ses-NFB3_T1w_seg.nii.gz" for s in (subjects[0], subjects[3])), written
    for s in (subjects[0], subjects[3]):  # complete files on the input grid
        assert nib.load(out / f"sub-{s}_ses-NFB3_T1w_seg.nii.gz").get_fdata().shape == nib.load(image[s]).shape
