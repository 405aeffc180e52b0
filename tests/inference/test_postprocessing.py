"""The post-processing strategies evaluation chooses from, the transform that applies one, and the record of the
winner (``common.inference.postprocessing``), checked against scipy.ndimage on hand-made label maps."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import ndimage

from common.inference.postprocessing import (
    STRATEGIES,
    ApplyPostprocessingd,
    PostprocessingSelector,
    apply_strategy,
    read_strategy,
)

SHAPE = (48, 48, 48)


def ball(centre: tuple[int, int, int], radius: float) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, s) for s in SHAPE)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def labels() -> np.ndarray:
    """Label 1: a ball with a hole, a one-voxel spur and a small separate cube; label 2: two balls."""
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[ball((16, 16, 16), 11)] = 1
    lab[ball((16, 16, 16), 1.5)] = 0  # a hole
    lab[16, 16, 27:36] = 1  # a thin spur out of the ball
    lab[38:41, 4:7, 4:7] = 1  # a 3^3 cube, a separate component
    lab[ball((36, 36, 36), 7)] = 2
    lab[ball((36, 36, 12), 3)] = 2  # the smaller component of label 2
    return lab


def largest(mask: np.ndarray) -> np.ndarray:
    components, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))  # MONAI: full connectivity
    sizes = ndimage.sum(mask, components, range(1, n + 1))
    return components == 1 + int(np.argmax(sizes))


def morphological(mask: np.ndarray) -> np.ndarray:
    """Erode 2 voxels (5-wide box), largest component, dilate 1 voxel (3-wide box), fill holes."""
    m = ndimage.binary_erosion(mask, np.ones((5, 5, 5)))
    m = ndimage.binary_dilation(largest(m), np.ones((3, 3, 3)))
    return ndimage.binary_fill_holes(m)


def _apply(lab: np.ndarray, strategy: str) -> np.ndarray:
    return np.asarray(apply_strategy(torch.as_tensor(lab)[None], strategy))[0]


def test_none_returns_the_labels_unchanged():
    lab = labels()
    assert np.array_equal(_apply(lab, "none"), lab)


def test_largest_component_keeps_the_largest_per_label():
    lab = labels()
    out = _apply(lab, "largest_component")
    assert np.array_equal(out == 1, largest(lab == 1)) and np.array_equal(out == 2, largest(lab == 2))
    assert out[39, 5, 5] == 0 and out[36, 36, 12] == 0  # the cube and the small ball are gone
    assert out[16, 16, 34] == 1 and out[16, 16, 16] == 0  # the spur is connected; the hole stays a hole
    assert set(np.unique(out).tolist()) == {0, 1, 2}


def test_morphological_opens_keeps_the_largest_and_fills_holes():
    lab = labels()
    out = _apply(lab, "morphological")
    for value in (1, 2):
        want = morphological(lab == value)
        assert want.sum() > 100, value
        assert np.array_equal(out == value, want), value
    assert out[16, 16, 16] == 1 and out[16, 16, 34] == 0  # hole filled, spur opened away
    assert out[39, 5, 5] == 0 and out[36, 36, 12] == 0
    assert not np.array_equal(out, _apply(lab, "largest_component"))


def test_multi_channel_regions_are_processed_one_channel_at_a_time():
    """BraTS TC/WT/ET: overlapping binary channels, each its own mask."""
    lab = labels()
    regions = np.stack([lab == 1, lab > 0]).astype(np.float32)  # channel 1 holds both labels
    out = np.asarray(apply_strategy(torch.as_tensor(regions), "largest_component"))
    assert out.shape == regions.shape and out.dtype == np.float32
    assert np.array_equal(out[0] > 0, largest(lab == 1))
    assert np.array_equal(out[1] > 0, largest(lab > 0))


def test_transform_applies_the_strategy_to_its_keys():
    lab = torch.as_tensor(labels())[None]
    d = ApplyPostprocessingd("pred", "largest_component", output_keys="pred_lc")({"pred": lab, "label": lab})
    assert torch.equal(d["pred"], lab) and torch.equal(d["label"], lab)  # the input is left as it was
    assert torch.equal(torch.as_tensor(d["pred_lc"]), apply_strategy(lab, "largest_component"))
    in_place = ApplyPostprocessingd("pred", "morphological")({"pred": lab})
    assert torch.equal(torch.as_tensor(in_place["pred"]), apply_strategy(lab, "morphological"))
    for bad in (lambda: ApplyPostprocessingd("pred", "opening"), lambda: apply_strategy(lab, "opening")):
        with pytest.raises(ValueError, match="Unknown post-processing strategy 'opening'"):
            bad()


@pytest.mark.parametrize(
    "scores,best",
    [({"none": 0.80, "largest_component": 0.85, "morphological": 0.83}, "largest_component"),
     ({"none": 0.80, "largest_component": 0.79, "morphological": 0.81}, "morphological"),
     ({"none": 0.80, "largest_component": 0.80, "morphological": 0.80}, "none")],  # ties: the simplest
)
def test_selector_records_the_best_strategy_and_inference_reads_it(tmp_path, scores, best):
    names = {"none": "val_mean_dice", "largest_component": "val_mean_dice_largest_component",
             "morphological": "val_mean_dice_morphological"}
    out = tmp_path / "models" / "postprocessing.json"
    assert read_strategy(str(out)) == "none"  # before evaluation ran
    engine = SimpleNamespace(state=SimpleNamespace(metrics={names[s]: v for s, v in scores.items()}))
    PostprocessingSelector(names, str(out))(engine)
    assert json.loads(out.read_text()) == {"strategy": best, "mean_dice": scores}
    assert read_strategy(str(out)) == best
    out.write_text(json.dumps({"strategy": "opening"}))
    with pytest.raises(ValueError, match="unknown post-processing strategy 'opening'"):
        read_strategy(str(out))
    with pytest.raises(ValueError, match="Unknown post-processing strategies"):
        PostprocessingSelector({"opening": "val_mean_dice"}, str(out))
    assert set(names) == set(STRATEGIES)
