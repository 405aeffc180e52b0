"""The README's main job runs end to end (learning itself is asserted in test_bundle_nfbs.py)."""

from common.demo import demo


def test_demo_trains_evaluates_and_infers(tmp_path, capsys):
    result = demo(out=str(tmp_path), cases=4, epochs=2)
    assert result["predictions"] == 4
    assert result["parameters"] == 117_922  # pocket U-Net, 16 features, depth 3
    assert result["parameters if pocket=False"] == 1_401_986
    assert 0.0 <= result["validation Dice"] <= 1.0
    printed = capsys.readouterr().out
    assert "-m monai.bundle run training" in printed  # the real CLI command is shown
    assert "demo summary" in printed
