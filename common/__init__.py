"""Shared code of the pocket bundle collection: what the bundle configs import, and the tools around it.

Subpackages by role: ``networks`` (architectures), ``losses``, ``data`` (data lists, checks), ``datasets``
(one module per dataset), ``training``, ``inference``, ``metrics``, ``engines``, ``benchmarks`` and ``experiments``
(``errors``: what the user must fix, as one sentence);
``python -m common --help`` lists the commands.
"""

from pathlib import Path

from common.errors import install_excepthook

#: The repository checkout (bundles/ and data_lists/ live beside this package).
REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO_ROOT / "bundles"

install_excepthook()  # a problem the user fixes is printed as its one sentence (common.errors)
