"""Each model card's "Your data" section runs as written: from the dataset's official archive to a trained,
evaluated model and a prediction for a new image.

The archive is packed from look-alike data in the release's layout and file names (``NFBS_Dataset.tar.gz``, the
two LiTS training zips, ``MICCAI_BraTS2020_TrainingData.zip``, ``Task05_Prostate.tar``; COVIDx is assembled by
hand from several sources, so its section starts from the assembled folder and COVID-Net's split files). The
commands run in the card's order in a copy of the repository's bundles and data lists, shell lines with bash,
``pocket`` and ``python -m monai.bundle`` in this process; ``~`` and ``/data`` are folders of the test. Only the
sizes differ: training and evaluation commands get the tiny settings of ``TINY`` (appended, or replacing the
card's value), so that each bundle trains for one epoch in seconds. What the section promises is then checked:
``models/model.pt``, the evaluation's metrics and pictures, and a prediction for every new image on its grid.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_documented_commands import BUNDLE_DATASET, LOOKALIKE

from common import REPO_ROOT
from common.__main__ import main

SECTION = "## Your data"
SHELL = ("mkdir", "tar", "unzip", "mv", "cp")
#: Training and evaluation at test size (one epoch, tiny networks); keys the card sets are replaced.
TINY = {
    "nfbs": {"patch_size": "[16,16,16]", "init_filters": "4", "epochs": "1", "val_interval": "1"},
    "lits": {"patch_size": "[16,16,16]", "init_filters": "4", "epochs": "1", "val_interval": "1"},
    "brats": {"patch_size": "[16,16,16]", "init_filters": "4", "epochs": "1", "val_interval": "1"},
    "covidx": {"image_size": "[64,64]", "epochs": "1", "batch_size": "8"},
    "prostate": {"image_size": "64", "features": "4", "epochs": "1", "val_interval": "1"},
}
EVERY_RUN = {"num_workers": "0", "cpu_threads": "1"}
CARDS = {b: REPO_ROOT / "bundles" / b / "docs" / "README.md" for b in sorted(BUNDLE_DATASET)}


def section_commands(card: Path) -> list[str]:
    """The commands of the first bash block after the card's "Your data" heading: continuations joined,
    comments dropped, the text as a shell would get it."""
    text = card.read_text()
    assert SECTION in text, f"{card}: no {SECTION!r} section"
    block = text[text.index(SECTION):].split("```bash\n", 1)[1].split("\n```", 1)[0]
    commands, buf = [], ""
    for line in block.splitlines():
        if line.lstrip().startswith("#") and not buf:
            continue
        buf += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            commands.append(" ".join(buf.split()))
            buf = ""
    return commands


def _pack_download(dataset: str, root: Path) -> None:
    """The official archive of ``dataset`` under ``~/Downloads`` (COVIDx: the assembled folder), made from
    look-alike data, and the new images of the section's last step."""
    from common.datasets import write_lookalike

    home, stage = root / "home", root / "stage"
    downloads = home / "Downloads"
    downloads.mkdir(parents=True)
    if dataset == "covidx":
        data = Path(write_lookalike("covidx", str(root / "data" / "COVIDx"), **LOOKALIKE["covidx"]))
        labels = home / "COVID-Net" / "labels"
        labels.mkdir(parents=True)
        for split in ("train_COVIDx8B.txt", "test_COVIDx8B.txt"):
            shutil.move(data / split, labels / split)  # the section copies them back
        films = home / "films"
        films.mkdir()
        shutil.copy(sorted((data / "test").glob("*.png"))[0], films / "new_film.png")
        return
    data = Path(write_lookalike(dataset, str(stage / dataset), **LOOKALIKE[dataset]))
    if dataset == "nfbs":
        with tarfile.open(downloads / "NFBS_Dataset.tar.gz", "w:gz") as tar:
            tar.add(data, arcname="NFBS_Dataset")
        new = [sorted(data.glob("*/sub-*_ses-NFB3_T1w.nii.gz"))[0]]
    elif dataset == "prostate":
        with tarfile.open(downloads / "Task05_Prostate.tar", "w") as tar:
            tar.add(data, arcname="Task05_Prostate")
        new = [sorted((data / "imagesTs").glob("prostate_*.nii.gz"))[0]]
    elif dataset == "lits":  # two archives, each one "Training Batch N/" folder (cases 0-27 and 28-130)
        for batch, cases in ((1, range(0, 28)), (2, range(28, 131))):
            with zipfile.ZipFile(downloads / f"Training_Batch{batch}.zip", "w") as z:
                for n in cases:
                    for name in (f"volume-{n}.nii", f"segmentation-{n}.nii"):
                        z.write(data / name, f"Training Batch {batch}/{name}")
        new = [data / "volume-130.nii"]
    else:  # brats
        with zipfile.ZipFile(downloads / "MICCAI_BraTS2020_TrainingData.zip", "w") as z:
            for path in sorted(data.rglob("*")):
                z.write(path, f"MICCAI_BraTS2020_TrainingData/{path.relative_to(data)}")
        case = sorted(p for p in data.iterdir() if p.is_dir())[0]
        shutil.copytree(case, home / "cases" / case.name, ignore=shutil.ignore_patterns("*_seg.nii*", "*Segm*"))
        return
    scans = home / "scans"
    scans.mkdir()
    for i, path in enumerate(new):  # a new scan, named as a user's file would be
        nib.save(nib.load(path), scans / f"new_scan_{i}.nii.gz")


def _expand(text: str, root: Path) -> str:
    text = text.replace("~/", f"{root / 'home'}/")
    return re.sub(r"(?<![\w/.~-])/data(?=[/\s\"']|$)", str(root / "data"), text)


def _with_settings(argv: list[str], settings: dict[str, str]) -> list[str]:
    argv = list(argv)
    for key, value in settings.items():
        flag = f"--{key}"
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def _run(command: str, dataset: str, cwd: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fire
    from monai.bundle import scripts

    text = _expand(command, root)
    argv = shlex.split(text)
    monkeypatch.chdir(cwd)
    if argv[0] in SHELL:
        done = subprocess.run(["bash", "-c", text], cwd=cwd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    elif argv[0] == "pocket":
        with pytest.raises(SystemExit) as exit_info:
            main(argv[1:])
            raise SystemExit(0)
        assert exit_info.value.code in (0, None), command
    elif argv[:4] == ["python", "-m", "monai.bundle", "run"]:
        run_args = argv[3:]
        configs = run_args[run_args.index("--config_file") + 1]
        tiny = TINY[dataset] if "train.json" in configs and "inference" not in configs else {}
        if "evaluate.json" in configs:  # the network comes from models/training_params.json
            tiny = {k: v for k, v in tiny.items() if k in ("image_size",)}
        monkeypatch.setattr(sys, "argv", ["monai.bundle", *run_args])
        fire.Fire({"run": scripts.run}, command=_with_settings(run_args, {**tiny, **EVERY_RUN}))
    else:
        pytest.fail(f"{command!r}: a kind of command this test does not know how to run")


def _same_grid(mask: Path, image: Path) -> None:
    m, i = nib.load(mask), nib.load(image)
    assert m.shape == i.shape[:3], (mask, m.shape, i.shape)
    assert np.allclose(m.affine, i.affine, atol=1e-3), (mask, m.affine, i.affine)


@pytest.mark.parametrize("bundle", sorted(CARDS))
def test_your_data_section_runs_from_the_archive_to_a_prediction(bundle: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = BUNDLE_DATASET[bundle]
    commands = section_commands(CARDS[bundle])
    assert len(commands) >= 5, commands
    for part in ("bundles", "data_lists"):
        shutil.copytree(REPO_ROOT / part, tmp_path / "repo" / part,
                        ignore=shutil.ignore_patterns("models", "eval", "runs", "cache"))
    bundle_copy = tmp_path / "repo" / "bundles" / bundle
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _pack_download(dataset, tmp_path)
    for command in commands:
        _run(command, dataset, bundle_copy, tmp_path, monkeypatch)

    assert (bundle_copy / "models" / "model.pt").is_file()
    home = tmp_path / "home"
    if dataset == "covidx":
        assert {"metrics.csv", "predictions.csv", "roc.png", "confusion.png"} <= set(os.listdir(bundle_copy / "eval"
                                                                                             / "test"))
        rows = (home / "films" / "predictions" / "predictions.csv").read_text().splitlines()
        assert len(rows) == 2 and "new_film.png" in rows[1], rows
        return
    assert {"metrics.csv", "cases.png", "boxplot.png"} <= set(os.listdir(bundle_copy / "eval"))
    if dataset == "brats":
        (case,) = (home / "cases").glob("BraTS20_*")
        _same_grid(home / "cases" / "masks" / f"{case.name}_seg.nii.gz", next(case.glob("*_t1.nii*")))
        return
    scans = sorted((home / "scans").glob("new_scan_*.nii.gz"))
    masks = sorted((home / "scans" / "masks").glob("*_seg.nii.gz"))
    assert [m.name for m in masks] == [s.name.replace(".nii.gz", "_seg.nii.gz") for s in scans], masks
    for mask, scan in zip(masks, scans):
        _same_grid(mask, scan)
