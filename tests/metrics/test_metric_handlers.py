"""The handlers in a real MONAI evaluation: an empty prediction and an empty reference count in metrics.csv."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import MetricsSaver, from_engine
from monai.transforms import AsDiscreted

from common.metrics import EmptyMaskCounter, HausdorffDistance, MeanDice

SHAPE = (8, 8, 8)


def case(name: str, ref: bool, pred: bool) -> dict:
    label = torch.zeros(1, *SHAPE)
    if ref:
        label[:, 2:6, 2:6, 2:6] = 1
    image = torch.full((1, *SHAPE), 1.0 if pred else -1.0)  # the "network" predicts foreground where image > 0
    if pred:
        image[:, :2] = -1.0
    meta = {"filename_or_obj": name}
    return {"image": MetaTensor(image, meta=meta), "label": MetaTensor(label, meta=dict(meta))}


def test_empty_prediction_and_empty_reference_are_scored_and_counted(tmp_path) -> None:
    data = [case("hit.nii.gz", True, True), case("missed.nii.gz", True, False), case("none.nii.gz", False, False)]
    net = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        net.weight[:] = torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1, 1)
        net.bias.zero_()
    post = AsDiscreted(["pred", "label"], argmax=[True, False], to_onehot=2)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(Dataset(data), batch_size=1), network=net,
        postprocessing=post,
        key_val_metric={"dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))},
        additional_metrics={"hd95": HausdorffDistance(percentile=95, output_transform=from_engine(["pred", "label"]))},
        val_handlers=[MetricsSaver(str(tmp_path), metrics="*", metric_details="*",
                                   batch_transform=lambda x: [xx["image"].meta for xx in x]),
                      EmptyMaskCounter(str(tmp_path), keys=["pred", "label"])],
    )
    evaluator.run()
    summary = dict(line.strip().split(",") for line in open(tmp_path / "metrics.csv"))
    diagonal = math.sqrt(3 * 8**2)
    assert float(summary["dice"]) == pytest.approx((2 * 64 / (64 + 384) + 0.0 + 1.0) / 3, abs=1e-6)  # hit, missed, none
    hit = float(open(tmp_path / "hd95_raw.csv").read().splitlines()[1].split(",")[-1])
    assert 0 < hit < diagonal
    assert float(summary["hd95"]) == pytest.approx((hit + diagonal + 0.0) / 3, abs=1e-5)
    with open(tmp_path / "empty_masks.csv") as f:
        rows = {r["key"]: r for r in csv.DictReader(f)}
    assert rows["pred"] == {"key": "pred", "cases": "3", "cases_with_an_empty_class": "2"}
    assert rows["label"]["cases_with_an_empty_class"] == "1"


def test_per_class_table_pools_voxels_and_averages_volumes_apart():
    """A large well-segmented tumour and a small missed one: pooling weighs voxels, the per-volume mean weighs
    volumes, and a class empty in both counts as 1 per volume without touching the pooled figure."""
    from common.metrics import per_class_rows

    # (volumes, classes, (TP, FP, FN)); class 0: big hit + small miss; class 1: a hit and an empty-in-both volume
    counts = torch.tensor([[[90, 10, 0], [5, 0, 5]],
                           [[0, 0, 10], [0, 0, 0]]])
    big, small = per_class_rows(counts, ["a", "b"])
    assert big["pooled_dice"] == pytest.approx(180 / 200)
    assert big["pooled_jaccard"] == pytest.approx(90 / 110)
    assert big["volume_dice"] == pytest.approx((180 / 190 + 0.0) / 2)
    assert small["pooled_dice"] == pytest.approx(10 / 15)  # the empty volume adds nothing to the pool
    assert small["volume_dice"] == pytest.approx((10 / 15 + 1.0) / 2)
    assert (big["volumes_empty_in_both"], small["volumes_empty_in_both"]) == (0, 1)
    assert small["volumes"] == 2
