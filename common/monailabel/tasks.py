"""MONAI Label tasks for the collection's bundles: /infer for each bundle and variant, /train for the segmenters.

MONAI Label's own ``BundleInferTask`` reads one config from ``<bundle>/configs`` and the weights from
``<bundle>/models/model.pt``, appends ``Restored`` (which fails on a class-probability vector) and writes the mask
with the preprocessed image's affine. Here a task reads ``inference.json`` plus an optional overlay (cascade,
slab, regions, ...), takes the weights from the overlay's ``ckpt_dir``, runs the engine the bundle chose
(``pocket engines``) or the one the model name asks for, writes masks on the input file's grid and answers a
classification with its class and probability. The network is built from the settings the model was trained
with (``training_params.json``), as ``inference.json`` itself does.

This module imports monailabel: it runs in the MONAI Label environment only.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, MapTransform, SaveImaged
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

from common.engines.runtime import load_engine
from common.errors import InvalidInputError
from common.monailabel.models import bundle_overlays
from common.training.params import read_training_params

logger = logging.getLogger(__name__)

__all__ = ["BundleTask", "OnInputGrid", "PocketTrainTask"]

#: Label names of an output whose values the metadata's ``channel_def`` does not list (BraTS regions variant).
_LABEL_NAMES = {"regions": {"necrotic and non-enhancing tumour core": 1, "peritumoural edema": 2,
                            "enhancing tumour": 4}}


def _is_transform(t: Any, kinds: Sequence[type]) -> bool:
    return any(isinstance(t, k) for k in kinds)


class OnInputGrid(MapTransform):
    """Last post-processing step of a segmentation: the label map without its channel, on the input file's grid.

    The bundles' post-processing already inverts the preprocessing (``Invertd``) or predicts at the input size
    (the prostate's slice inferer); MONAI Label's writer then takes the affine from ``image_meta_dict``, which
    this sets to the input file's own (``original_affine``), not the reoriented and resampled working grid's.
    """

    def __init__(self, keys: str = "pred", ref_key: str = "image") -> None:
        super().__init__(keys)
        self.ref_key = ref_key

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        image = d[self.ref_key]
        meta = image.meta if isinstance(image, MetaTensor) else d.get(f"{self.ref_key}_meta_dict", {})
        shape = [int(s) for s in np.asarray(meta.get("spatial_shape", ()))]
        for key in self.key_iterator(d):
            pred = d[key]
            if pred.ndim == len(shape) + 1 and pred.shape[0] == 1:
                pred = pred[0]
            if shape and list(pred.shape) != shape:
                raise InvalidInputError(f"{meta.get('filename_or_obj', 'the image')}: the prediction's grid "
                                        f"{list(pred.shape)} is not the image's {shape}.")
            d[key] = pred
        affine = meta.get("original_affine", meta.get("affine"))
        d[f"{self.ref_key}_meta_dict"] = {"affine": torch.as_tensor(affine).cpu().numpy()}
        return d


class BundleTask(BasicInferTask):
    """/infer of one bundle, or of one of its variants (an overlay config) or engines.

    Args:
        bundle_dir: the bundle folder (its configs are read from there, never copied).
        bundle_root: the folder whose ``models/`` holds the trained weights (the bundle folder by default).
        variant: an overlay of :func:`bundle_overlays`, or ``None`` for ``inference.json`` alone.
        engine: ``"auto"`` (the engine ``pocket engines`` recorded, else torch) or one of the engines.
    """

    def __init__(self, bundle_dir: str | os.PathLike, bundle_root: str | os.PathLike | None = None,
                 variant: str | None = None, engine: str = "auto") -> None:
        self.bundle_dir = Path(bundle_dir)
        self.bundle_root = Path(bundle_root or bundle_dir)
        self.variant, self.engine = variant, engine
        configs = self.bundle_dir / "configs"
        files = [configs / "inference.json"] + ([bundle_overlays(bundle_dir)[variant]] if variant else [])
        metadata = json.loads((configs / "metadata.json").read_text())
        self.parser = ConfigParser()
        self.parser.read_meta(str(configs / "metadata.json"))
        self.parser.read_config([str(f) for f in files])
        self.parser["bundle_root"] = str(self.bundle_root)
        self.ckpt_dir = Path(self.parser.get_parsed_content("ckpt_dir"))
        classification = self.bundle_dir.name.endswith("_classification")
        output = next(iter(metadata["network_data_format"]["outputs"].values()))
        labels = _LABEL_NAMES.get(variant or "") or {
            name: int(k) for k, name in output.get("channel_def", {}).items()
            if classification or name.lower() != "background"}
        self._engine_cache: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}
        self.why_not: str | None = None
        super().__init__(
            path=str(self.ckpt_dir / "model.pt"),
            network=self.parser.get_parsed_content("network_def"),
            type=InferType.CLASSIFICATION if classification else InferType.SEGMENTATION,
            labels=labels,
            dimension=2 if classification else 3,  # the prostate's 2D network is served on 3D volumes
            description=metadata.get("description", self.bundle_dir.name),
            load_strict=True,
            config={"engine": engine},
        )

    def is_valid(self) -> bool:
        """Served only when ``<ckpt_dir>/model.pt`` exists and fits this variant's network (strictly).

        Some overlays share ``models/`` with ``inference.json`` (e.g. the short 2D recipes): the weights there
        belong to whichever recipe trained last, and only the matching model name is served.
        """
        if self.why_not is None:
            self.why_not = self._why_not_served()
        return not self.why_not

    def _why_not_served(self) -> str:
        path = self.ckpt_dir / "model.pt"
        if not path.is_file():
            return f"no trained weights at {path}"
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        try:
            self.network.load_state_dict(checkpoint.get(self.model_state_dict, checkpoint), strict=True)
        except RuntimeError:
            return f"{path} holds the weights of another recipe"
        return ""

    def info(self) -> dict[str, Any]:
        i = super().info()
        i.update(bundle=self.bundle_dir.name, variant=self.variant, engine=self.engine,
                 training_params=read_training_params(self.ckpt_dir))
        return i

    def _parsed_list(self, key: str, drop: Sequence[type] = ()) -> list[Callable]:
        content = self.parser.get_parsed_content(key)
        transforms = list(content.transforms) if isinstance(content, Compose) else list(content)
        return [t for t in transforms if not _is_transform(t, drop)]

    def pre_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        return self._parsed_list("preprocessing")

    def run_pre_transforms(self, data: dict, transforms: Sequence[Callable]) -> dict:
        # MONAI's Spacingd updates every "image_*" key of a NIfTI as a meta dict, MONAI Label's "image_path" too
        path = data.pop("image_path", None)
        data = super().run_pre_transforms(data, transforms)
        if path is not None:
            data["image_path"] = path
        return data

    def inferer(self, data: dict | None = None) -> Any:
        return self.parser.get_parsed_content("inferer")

    def post_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        post = self._parsed_list("postprocessing", drop=(SaveImaged,))
        return post if self.type == InferType.CLASSIFICATION else [*post, OnInputGrid("pred", "image")]

    def _get_network(self, device: str, data: dict | None) -> torch.nn.Module:
        """The weights as MONAI Label loads them (reloaded when ``model.pt`` changes), run by the chosen engine."""
        network = super()._get_network(device, data)
        cached = self._engine_cache.get(device)
        if cached is None or cached[0] is not network:
            threads = self.parser.get_parsed_content("cpu_threads")
            cached = (network, load_engine(network, self.ckpt_dir, self.engine, threads, device))
            self._engine_cache[device] = cached
        return cached[1]

    def writer(self, data: dict, extension: str | None = None, dtype: Any = None) -> tuple[Any, dict]:
        if self.type != InferType.CLASSIFICATION:
            return super().writer(data, extension, dtype)
        probabilities = torch.as_tensor(data["pred"]).detach().float().flatten().cpu()
        names = {index: name for name, index in self.labels.items()}
        best = int(probabilities.argmax())
        prediction = [{"idx": i, "label": names.get(i, f"label_{i}"), "score": float(p)}
                      for i, p in enumerate(probabilities)]
        return None, {"label": names.get(best, f"label_{best}"), "idx": best,
                      "score": float(probabilities[best]), "prediction": prediction}


class PocketTrainTask(BundleTrainTask):
    """/train of a segmentation bundle on the datastore's labelled images, fine-tuning the served model.

    On top of MONAI Label's bundle trainer: the configs come from the bundle folder and the weights go to
    ``bundle_root/models``; the network is built with the settings the model was trained with; training starts
    from ``model.pt`` (not from the last resume checkpoint, whose epoch count would end the run at once); it
    validates at least at the end so that ``model.pt`` is rewritten. The data check runs on the datastore's
    list like on any other (the bundles check inside their dataset, which MONAI Label's override keeps).
    """

    def __init__(self, bundle_dir: str | os.PathLike, bundle_root: str | os.PathLike | None, conf: dict) -> None:
        super().__init__(str(bundle_dir), conf, load_strict=True)
        self.bundle_path = str(bundle_root or bundle_dir)
        self.bundle_config["bundle_root"] = self.bundle_path

    def config(self) -> dict[str, Any]:
        options = super().config()
        options.update(max_epochs=10, multi_gpu=False)
        return options

    def _update_overrides(self, overrides: dict) -> dict:
        ckpt_dir = Path(self.bundle_path) / "models"
        for key, value in read_training_params(ckpt_dir).items():
            if key in self.bundle_config.config:
                overrides[key] = value
        epochs = int(overrides[self.const.key_train_trainer_max_epochs()])
        overrides["epochs"] = epochs
        overrides["val_interval"] = max(1, min(int(self.bundle_config.config.get("val_interval", 1)), epochs))
        overrides["resume"] = False
        overrides["num_workers"] = 0
        return overrides
