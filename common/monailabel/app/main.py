"""The MONAI Label app of the collection: every bundle of ``bundles/`` served from its own folder.

Started by ``python -m common monailabel --studies DIR`` (or ``monailabel start_server --app <this folder>``).
Model names (``common.monailabel.models``): ``<bundle>``, ``<bundle>_<variant>`` for each overlay whose weights
exist (``cascade``, ``slab``, ``regions``, ...) and ``<bundle>_<engine>`` for each up-to-date export. A model
without fitting weights is left out, and so, unless named in ``models``, is a variant that shares ``models/``
with the bundle's own (the short recipes): the log says why for each.

Settings (``--conf KEY VALUE``):
    bundles       folder of the bundles (default: the repository's ``bundles/``)
    models_root   folder holding ``<bundle>/models/`` for each bundle (default: the bundle folders themselves)
    models        ``all`` (default) or a comma-separated list of model names
    skip_trainers ``true`` serves /infer only
"""

from __future__ import annotations

import logging
from pathlib import Path

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

from common import REPO_ROOT
from common.monailabel.models import bundle_dirs, model_names
from common.monailabel.tasks import BundleTask, PocketTrainTask

logger = logging.getLogger(__name__)


class PocketBundlesApp(MONAILabelApp):
    """Infer tasks for every bundle, variant and engine; train tasks for the segmentation bundles."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundles = Path(conf.get("bundles") or REPO_ROOT / "bundles")
        self.models_root = Path(conf["models_root"]) if conf.get("models_root") else None
        wanted = conf.get("models", "all")
        self.wanted = None if wanted in ("", "all") else {m.strip() for m in wanted.split(",") if m.strip()}
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="Pocket bundles",
                         description="PocketNet bundles: segmentation and classification on modest hardware",
                         version=monailabel.__version__)

    def bundle_root(self, bundle: Path) -> Path:
        return self.models_root / bundle.name if self.models_root else bundle

    def _wants(self, name: str) -> bool:
        return self.wanted is None or name in self.wanted

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for bundle in bundle_dirs(self.bundles):
            root, base_ckpt = self.bundle_root(bundle), None
            for name, kwargs in model_names(bundle, root / "models").items():
                if not self._wants(name):
                    continue
                task = BundleTask(bundle, root, **kwargs)
                base_ckpt = base_ckpt or task.ckpt_dir  # the first name is the bundle's own
                if kwargs.get("variant") and task.ckpt_dir == base_ckpt and self.wanted is None:
                    # e.g. the short 2D recipes: models/ holds whichever recipe trained last
                    logger.info("model %s: not served by default, it shares %s with %s; name it in --models "
                                "when that recipe trained the weights", name, task.ckpt_dir, bundle.name)
                    continue
                if not task.is_valid():
                    logger.info("model %s: not served, %s", name, task.why_not)
                    continue
                logger.info("+++ Adding Inferer:: %s (weights %s)", name, task.ckpt_dir)
                infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for bundle in bundle_dirs(self.bundles):
            # MONAI Label's datastore holds label images; COVIDx's labels are classes in its list file
            if not bundle.name.endswith("_segmentation") or not self._wants(bundle.name):
                continue
            trainers[bundle.name] = PocketTrainTask(bundle, self.bundle_root(bundle), self.conf)
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}
