"""The MONAI Label environment: its own virtual environment, created on first use and reused after.

monailabel 0.8.5 cannot be installed beside the collection (it needs numpy 1, pydicom 2 and a torchvision that
loads, see docs/dependencies.md), so it gets ``.venv-monailabel/`` with the exact versions of
``requirements/monailabel-constraints.txt``; monailabel itself and this package go in with ``--no-deps`` so that
pip re-resolves nothing the constraints fixed. A stamp file (a hash of the requirement files) says whether the
environment is current: a second start costs a hash, a changed requirement file re-installs.

Nothing here imports monailabel: this module runs in the collection's own environment.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["REPO", "environment_python", "ensure_environment"]

#: The repository root (the editable install's source).
REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements" / "monailabel.txt"
CONSTRAINTS = REPO / "requirements" / "monailabel-constraints.txt"
MONAILABEL = "monailabel==0.8.5"
STAMP = ".pocket-monailabel-stamp"


def default_venv() -> Path:
    """``$POCKET_MONAILABEL_VENV``, else ``.venv-monailabel`` in the repository root."""
    return Path(os.environ.get("POCKET_MONAILABEL_VENV") or REPO / ".venv-monailabel")


def environment_python(venv: str | os.PathLike | None = None) -> Path:
    """The environment's interpreter."""
    return Path(venv or default_venv()) / "bin" / "python"


def _stamp() -> str:
    digest = hashlib.sha256(MONAILABEL.encode())
    for path in (REQUIREMENTS, CONSTRAINTS):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _size_gb(folder: Path) -> float:
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 1024**3


def _run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def ensure_environment(venv: str | os.PathLike | None = None, python: str | None = None) -> Path:
    """Create or update the MONAI Label environment when its stamp is stale; return its interpreter.

    Args:
        venv: where (default :func:`default_venv`).
        python: the interpreter to base it on (default: this one's base interpreter, CPython 3.11).
    """
    venv = Path(venv or default_venv())
    stamp, wanted = venv / STAMP, _stamp()
    if stamp.is_file() and stamp.read_text().strip() == wanted and environment_python(venv).exists():
        return environment_python(venv)
    start = time.perf_counter()
    print(f"MONAI Label environment: creating {venv} (first use; about 4 min and 8-9 GB, most of it the CUDA "
          "libraries of the regular torch build)", flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    base = python or getattr(sys, "_base_executable", None) or sys.executable
    _run([base, "-m", "venv", str(venv)])
    pip = [str(environment_python(venv)), "-m", "pip", "install", "-q", "--progress-bar", "off"]
    _run(pip + ["-c", str(CONSTRAINTS), "-r", str(REQUIREMENTS)])
    _run(pip + ["--no-deps", "-c", str(CONSTRAINTS), MONAILABEL])
    _run(pip + ["--no-deps", "-e", str(REPO)])
    stamp.write_text(wanted + "\n")
    print(f"MONAI Label environment ready in {time.perf_counter() - start:.0f} s, "
          f"{_size_gb(venv):.1f} GB at {venv}", flush=True)
    return environment_python(venv)
