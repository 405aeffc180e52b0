"""Shared code of the pocket bundle collection: what the bundle configs import, and the tools around it.

Subpackages by role: ``networks`` (architectures), ``losses``, ``data`` (data lists, checks), ``datasets``
(one module per dataset), ``training``, ``inference``, ``metrics``, ``engines``, ``benchmarks`` and ``experiments``
(``errors``: what the user must fix, as one sentence);
``python -m common --help`` lists the commands.
"""

import logging
import warnings
from pathlib import Path

from common.errors import install_excepthook

#: The repository checkout (bundles/ and data_lists/ live beside this package).
REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO_ROOT / "bundles"

install_excepthook()  # a problem the user fixes is printed as its one sentence (common.errors)

# With pydicom installed (COVIDx reads DICOM radiographs), every MONAI ``LoadImage`` also registers its
# nvImageCodec DICOM reader, which warns and logs on each construction when the CUDA decoder is absent (a CPU
# machine); pydicom's own decoders are what this collection uses, so neither says anything to act on.
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register")
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
