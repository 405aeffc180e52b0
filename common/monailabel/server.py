"""``python -m common monailabel --studies DIR``: a MONAI Label server with every bundle, on the user's studies.

Creates the MONAI Label environment on first use (:mod:`common.monailabel.environment`), then runs
``monailabel start_server`` from it with this collection's app (``common/monailabel/app``), which serves the
bundles from their own folders. The server runs in the foreground until Ctrl-C (or the process is stopped).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from common.monailabel.environment import REPO, ensure_environment

__all__ = ["APP", "monailabel", "server_command"]

APP = Path(__file__).resolve().parent / "app"


def server_command(python: str | os.PathLike, studies: str | os.PathLike, host: str = "127.0.0.1",
                   port: int = 8000, models: str = "all", models_root: str | os.PathLike | None = None,
                   bundles: str | os.PathLike | None = None, skip_trainers: bool = False) -> list[str]:
    """The ``monailabel start_server`` command line run by :func:`monailabel`."""
    cmd = [str(python), "-m", "monailabel.main", "start_server", "--app", str(APP), "--studies", str(studies),
           "--host", host, "--port", str(port), "--conf", "models", models,
           "--conf", "bundles", str(bundles or REPO / "bundles")]
    if models_root:
        cmd += ["--conf", "models_root", str(models_root)]
    if skip_trainers:
        cmd += ["--conf", "skip_trainers", "true"]
    return cmd


def monailabel(studies: str = "", host: str = "127.0.0.1", port: int = 8000, models: str = "all",
               models_root: str = "", bundles: str = "", skip_trainers: bool = False, setup_only: bool = False,
               venv: str = "") -> int:
    """Start MONAI Label (monailabel 0.8.5) on ``studies`` with every trained bundle; returns its exit status.

    Args:
        studies: the studies folder (images; labels in ``labels/final/``, as MONAI Label's local datastore).
        host: the address the server listens on (``0.0.0.0`` to be reached from other machines).
        port: its port (``http://127.0.0.1:8000`` by default).
        models: ``all`` or comma-separated model names (``nfbs_brain_mri_segmentation``,
            ``lits_liver_ct_segmentation_cascade``, ``nfbs_brain_mri_segmentation_openvino_int8``, ...).
        models_root: folder holding ``<bundle>/models/`` for each bundle (default: the bundle folders).
        bundles: folder of the bundles (default: this repository's ``bundles/``).
        skip_trainers: serve /infer only.
        setup_only: create or update the MONAI Label environment and stop.
        venv: where that environment lives (default ``.venv-monailabel`` in the repository root).
    """
    if setup_only:
        ensure_environment(venv or None)
        return 0
    if not studies:
        raise ValueError("--studies is needed: the folder of images MONAI Label serves.")
    if not Path(studies).is_dir():
        raise NotADirectoryError(f"{studies}: the studies folder does not exist.")
    for folder, what in ((models_root, "models_root"), (bundles, "bundles")):
        if folder and not Path(folder).is_dir():
            raise NotADirectoryError(f"{folder}: the {what} folder does not exist.")
    python = ensure_environment(venv or None)
    cmd = server_command(python, Path(studies).resolve(), host, port, models,
                         Path(models_root).resolve() if models_root else None,
                         Path(bundles).resolve() if bundles else None, skip_trainers)
    print("+ " + " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, cwd=REPO).returncode
    except KeyboardInterrupt:
        return 130
