"""Post-processing strategies for segmentation label maps, and the record of which one won.

PocketNet (Celaya et al., "PocketNet: A Smaller Neural Network for Medical Image Analysis", IEEE TMI 2022) picks
the post-processing by validation Dice. Three strategies, applied per foreground label:
``none``; ``largest_component`` (keep the largest connected component); ``morphological`` (erode 2 voxels,
keep the largest component, dilate 1 voxel, fill holes). ``evaluate.json`` scores all three on the
validation cases and writes the winner to ``models/postprocessing.json``; ``inference.json`` reads it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import FillHoles, KeepLargestConnectedComponent, MapTransform
from monai.transforms.utils_morphological_ops import dilate, erode

from common.errors import InvalidInputError

STRATEGIES = ("none", "largest_component", "morphological")
logger = logging.getLogger(__name__)


def _largest(mask: torch.Tensor) -> torch.Tensor:
    return KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False)(mask)


def _morphological(mask: torch.Tensor) -> torch.Tensor:
    """Erode 2, largest component, dilate 1, fill holes, on a (1, *spatial) binary mask."""
    m = mask.float().unsqueeze(0)  # erode/dilate take (B, C, *spatial)
    m = erode(m, filter_size=5)  # a 5-wide box removes 2 voxels from every border
    m = _largest(m[0])
    m = dilate(m.float().unsqueeze(0), filter_size=3)[0]
    return FillHoles(applied_labels=[1])(m)


def apply_strategy(labels: torch.Tensor, strategy: str) -> torch.Tensor:
    """Apply ``strategy`` to a channel-first label map (1, *spatial) or to multi-channel binary masks.

    Multi-channel input (C > 1) is treated as independent binary regions (e.g. BraTS TC/WT/ET).
    """
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"Unknown post-processing strategy {strategy!r}; valid: {', '.join(STRATEGIES)}.")
    if strategy == "none":
        return labels
    fn = _largest if strategy == "largest_component" else _morphological
    data = torch.as_tensor(labels)
    if data.shape[0] > 1:  # independent binary channels
        return torch.cat([fn((data[c : c + 1] > 0).to(data.dtype)).to(data.dtype) for c in range(data.shape[0])])
    out = torch.zeros_like(data)
    for value in torch.unique(data).tolist():
        if value == 0:
            continue
        kept = fn((data == value).to(data.dtype))
        out[kept.to(torch.bool) & (out == 0)] = value
    return out


class ApplyPostprocessingd(MapTransform):
    """Dictionary transform: ``output_key = strategy(data[key])`` (``output_key`` defaults to ``key``)."""

    def __init__(self, keys: KeysCollection, strategy: str = "none", output_keys: KeysCollection | None = None):
        super().__init__(keys)
        if strategy not in STRATEGIES:
            raise InvalidInputError(f"Unknown post-processing strategy {strategy!r}; valid: {', '.join(STRATEGIES)}.")
        self.strategy = strategy
        self.output_keys = self.keys if output_keys is None else tuple(
            [output_keys] if isinstance(output_keys, str) else output_keys
        )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key, out_key in zip(self.keys, self.output_keys):
            d[out_key] = apply_strategy(d[key], self.strategy)
        return d


def read_strategy(path: str, default: str = "none") -> str:
    """The strategy recorded by evaluation at ``path``, or ``default`` if evaluation has not run yet."""
    if not os.path.exists(path):
        return default
    with open(path) as f:
        strategy = json.load(f)["strategy"]
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"{path}: unknown post-processing strategy {strategy!r}; valid: "
                                f"{', '.join(STRATEGIES)}.")
    return strategy


class PostprocessingSelector:
    """Ignite handler: when evaluation completes, record the strategy with the best mean metric.

    Args:
        metric_names: strategy -> name of the metric in ``engine.state.metrics`` that scores it.
        output_file: where the JSON record goes (``models/postprocessing.json``).
    """

    def __init__(self, metric_names: Mapping[str, str], output_file: str):
        unknown = set(metric_names) - set(STRATEGIES)
        if unknown:
            raise InvalidInputError(f"Unknown post-processing strategies {sorted(unknown)}; valid: "
                                    f"{', '.join(STRATEGIES)}.")
        self.metric_names = dict(metric_names)
        self.output_file = output_file

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine) -> None:
        scores = {s: float(engine.state.metrics[m]) for s, m in self.metric_names.items()}
        best = max(scores, key=lambda s: (scores[s], -STRATEGIES.index(s)))  # ties: the simplest wins
        os.makedirs(os.path.dirname(os.path.abspath(self.output_file)), exist_ok=True)
        with open(self.output_file, "w") as f:
            json.dump({"strategy": best, "mean_dice": scores}, f, indent=2)
        logger.info("post-processing scores %s; chosen: %s (written to %s)", scores, best, self.output_file)


