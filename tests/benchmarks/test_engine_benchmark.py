"""Tests of ``pocket engine_benchmark``: its table, its figures' arithmetic and its OOM rule (no timing asserts)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from common.benchmarks.engines import (
    SPECS,
    agreement,
    engine_benchmark,
    prepare_data,
    quick_spec,
    resize_nifti,
    run_child,
    windows_processed,
)


def test_window_count_follows_monai_sliding_window() -> None:
    import torch
    from monai.inferers import sliding_window_inference

    calls = []

    def net(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x

    sliding_window_inference(torch.zeros(1, 1, 256, 256, 192), (128, 128, 128), 1, net, overlap=0.5)
    assert windows_processed([256, 256, 192], [128, 128, 128]) == sum(calls) == 18
    assert windows_processed([100, 64, 64], [128, 128, 128]) == 1  # smaller than the window: one padded pass


def test_agreement_is_foreground_dice_and_class_equality() -> None:
    ref = {"a.nii.gz": np.array([0, 1, 1, 0]), "b.nii.gz": np.zeros(4)}
    assert agreement({"a.nii.gz": np.array([0, 1, 0, 0]), "b.nii.gz": np.zeros(4)}, ref) == pytest.approx(
        (2 / 3 + 1.0) / 2)
    assert agreement({"a.nii.gz": np.array([0, 1, 1, 0])}, ref) is None  # a missing output is no agreement
    classes = {"x.png": np.array(["positive"]), "y.png": np.array(["negative"])}
    assert agreement({"x.png": np.array(["positive"]), "y.png": np.array(["positive"])}, classes) == 0.5


def test_a_configuration_over_the_memory_limit_is_reported_as_oom(tmp_path) -> None:
    args = {"bundle": "nfbs_brain_mri_segmentation", "bundle_root": str(tmp_path), "dataset_dir": str(tmp_path),
            "output_dir": str(tmp_path / "out"), "config": "torch_eager", "window": "sliding", "threads": 1,
            "volumes": 1, "net": {}}
    result = run_child(args, max_rss=50 * 1024**2)  # importing torch alone needs more
    assert result["status"] == "OOM" and result["peak_rss"] > 50 * 1024**2


@pytest.mark.slow
def test_quick_benchmark_prints_a_row_per_configuration(tmp_path) -> None:
    """Look-alike NFBS at a quarter of the real side, one epoch: every row measured, Dice vs torch in [0, 1]."""
    table = engine_benchmark("nfbs", "pocket", "torch_eager,openvino_int8", "sliding,budget", volumes=2, threads=1,
                             work_dir=str(tmp_path), quick=True)
    configs = table[table.index("| configuration |"):].splitlines()[2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in configs if line.startswith("| ")]
    rows = {(c[0], c[1]): c for c in cells}
    assert set(rows) == {("torch_eager", "sliding"), ("torch_eager", "budget"), ("openvino_int8", "sliding"),
                         ("openvino_int8", "budget")}, table
    for cells in rows.values():
        marginal, dice, used = float(cells[4]), float(cells[9]), cells[10]
        assert marginal > 0 and 0.0 <= dice <= 1.0 and used in ("sliding", "whole")
    assert float(rows["torch_eager", "sliding"][9]) == 1.0  # the reference agrees with itself
    assert float(rows["openvino_int8", "sliding"][9]) > 0.8  # a brief training: INT8 still close to torch
    # with a measured memory per voxel and a volume this small the budgeted rows pass whole volumes
    assert rows["openvino_int8", "budget"][10] == "whole" and rows["torch_eager", "sliding"][10] == "sliding"
    assert re.search(r"INT8 model: \d+ convolutions run in int8", table)
    # where the marginal time goes: the inferer and each post-processing transform of the bundle, per row
    stages = re.findall(r"^- (\w+) (sliding|budget): inferer ([\d.]+), (.*)$", table, flags=re.M)
    assert {(s[0], s[1]) for s in stages} == set(rows), table
    for *_, inferer, rest in stages:
        assert float(inferer) > 0 and "AsDiscreted" in rest and "SaveImaged" in rest


def test_release_list_datasets_get_a_list_of_the_cases_written(tmp_path) -> None:
    """BraTS and LiTS lists are the release's: cut to the look-alike cases written, every fold with one."""
    for name in ("brats", "lits"):
        dataset_dir, datalist = prepare_data(quick_spec(SPECS[name]), tmp_path / name, cases=6)
        entries = json.loads(Path(datalist).read_text())["training"]
        assert len(entries) == 6 and sorted({e["fold"] for e in entries}) == [0, 1, 2, 3, 4]
        for e in entries:
            files = [e["image"]] if isinstance(e["image"], str) else e["image"]
            assert all((Path(dataset_dir) / f).is_file() for f in [*files, e["label"]])


def test_resize_keeps_labels_nearest_and_ramps_images_only_when_asked(tmp_path) -> None:
    """``smooth_images`` (the hard look-alike): int16 images get linear partial-volume ramps, uint8 labels keep
    their values; without it integers stay nearest, as the default benchmark data always were."""
    import nibabel as nib

    step = np.zeros((4, 4, 4), dtype=np.int16)
    step[2:] = 100
    for smooth, expected in ((False, {0, 100}), (True, None)):
        for arr, name in ((step, "image.nii"), ((step > 0).astype(np.uint8), "label.nii")):
            path = tmp_path / f"{smooth}_{name}"
            nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
            resize_nifti(path, (8, 8, 8), (0.5, 0.5, 0.5), smooth_images=smooth)
            out = nib.load(str(path))
            values = set(np.unique(np.asarray(out.dataobj)).tolist())
            assert out.shape == (8, 8, 8) and out.get_data_dtype() == arr.dtype
            assert np.allclose(out.header.get_zooms(), 0.5)
            if name == "label.nii":
                assert values == {0, 1}
            elif expected is not None:
                assert values == expected
            else:
                assert {0, 100} < values and all(0 <= v <= 100 for v in values)
