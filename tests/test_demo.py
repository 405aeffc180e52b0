"""The README's main job runs end to end (learning itself is asserted in test_bundle_nfbs.py)."""

import pytest
from bundle_helpers import read_metrics, read_per_case

from common.demo import demo


def test_demo_trains_evaluates_and_infers(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the bundle commands' "auto" threads keep it: repeatable rounding
    result = demo(out=str(tmp_path), cases=4, epochs=2)
    assert result["predictions"] == 4
    assert result["parameters"] == 117_922  # pocket U-Net, 16 features, depth 3
    assert result["parameters if pocket=False"] == 1_401_986
    # the summary is the evaluation's: metrics.csv, the mean of its one validation case
    summary = read_metrics(tmp_path / "bundle" / "eval")
    assert result["validation Dice"] == round(summary["val_mean_dice"], 4)
    per_case = read_per_case(tmp_path / "bundle" / "eval")
    assert len(per_case) == 1 and summary["val_mean_dice"] == pytest.approx(next(iter(per_case.values())))
    # 2 epochs reach 0.60 (one thread); calling every voxel brain scores 0.23 on these volumes
    assert result["validation Dice"] >= 0.4
    printed = capsys.readouterr().out
    assert "-m monai.bundle run training" in printed  # the real CLI command is shown
    assert "demo summary" in printed
    for picture in ("cases.png", "boxplot.png"):  # the demo says where the evaluation's pictures are
        path = tmp_path / "bundle" / "eval" / picture
        assert str(path) in printed and path.is_file()
