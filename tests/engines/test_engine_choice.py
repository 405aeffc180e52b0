"""choose_engine (fastest within tolerance of torch), the engine record, and ``pocket engines``' bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from common import BUNDLES_DIR
from common.__main__ import main
from common.engines.choose import choose_engine, render, resolve_bundle
from common.engines.record import ENGINES, EXPORT_FILES, RECORD_FILE, file_sha256, read_record, write_record


def scores(**engines: tuple[float, float]) -> dict[str, dict[str, float]]:
    return {e: {"metric": m, "seconds_per_case": s} for e, (m, s) in engines.items()}


def test_fastest_engine_within_tolerance_wins() -> None:
    s = scores(torch=(0.90, 10.0), onnxruntime=(0.899, 6.0), openvino=(0.897, 4.0), openvino_int8=(0.80, 1.0))
    # INT8 is the fastest but 0.1 below torch: it loses to the fastest engine within 0.005
    assert choose_engine(s, 0.005) == "openvino"
    assert choose_engine(s, 0.2) == "openvino_int8"
    assert choose_engine(s, 0.0) == "torch"  # nothing else reaches torch's metric


def test_torch_when_nothing_else_qualifies() -> None:
    s = scores(torch=(0.90, 10.0), onnxruntime=(0.70, 2.0), openvino=(0.60, 1.0))
    assert choose_engine(s, 0.01) == "torch"
    assert choose_engine(scores(torch=(0.5, 1.0)), 0.01) == "torch"


def test_tolerance_is_inclusive_and_better_metrics_qualify() -> None:
    # exact binary fractions: 0.75 - 0.25 == 0.5
    assert choose_engine(scores(torch=(0.75, 3.0), openvino=(0.5, 1.0)), 0.25) == "openvino"
    assert choose_engine(scores(torch=(0.75, 3.0), openvino=(0.5, 1.0)), 0.125) == "torch"
    # a better metric never disqualifies, but a slower engine does not win
    assert choose_engine(scores(torch=(0.75, 3.0), onnxruntime=(0.8, 4.0)), 0.0) == "torch"
    assert choose_engine(scores(torch=(0.75, 3.0), onnxruntime=(0.8, 2.0)), 0.0) == "onnxruntime"


def test_record_round_trip(tmp_path: Path) -> None:
    assert read_record(tmp_path) is None
    record = {"checkpoint": "model.pt", "model_sha256": "ab" * 32, "chosen": "openvino", "multiple": [16, 16, 16],
              "bytes_per_voxel": {"torch": 812.5, "openvino": 301.0}, "scores": {"torch": {"metric": 0.9}}}
    path = write_record(tmp_path, record)
    assert path == tmp_path / RECORD_FILE and json.loads(path.read_text()) == record
    assert read_record(tmp_path) == record
    record["chosen"] = "torch"
    write_record(tmp_path, record)  # overwritten, no temporary file left behind
    assert read_record(tmp_path)["chosen"] == "torch"
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_FILE]


def test_file_sha256_changes_with_the_bytes(tmp_path: Path) -> None:
    f = tmp_path / "model.pt"
    f.write_bytes(b"weights")
    digest = file_sha256(f)
    assert digest == hashlib.sha256(b"weights").hexdigest() and file_sha256(f) == digest
    f.write_bytes(b"weightz")
    assert file_sha256(f) != digest
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (3 << 20) + b"y")  # more than one read block
    assert file_sha256(big) == hashlib.sha256(b"x" * (3 << 20) + b"y").hexdigest()


def test_every_non_torch_engine_has_an_export_file() -> None:
    assert ENGINES[0] == "torch" and set(EXPORT_FILES) == set(ENGINES[1:])


def test_render_marks_the_chosen_engine(tmp_path: Path) -> None:
    record = {"checkpoint": "model.pt", "metric": "val_mean_dice", "cases_scored": 3, "chosen": "openvino",
              "calibration": {"samples": 8, "cases": 2}, "bytes_per_voxel": {"torch": 800.0, "openvino": 300.0},
              "int8_convolutions": {"int8": 11, "float": 2},
              "scores": scores(torch=(0.9, 2.0), openvino=(0.899, 1.0))}
    text = render(record, tmp_path)
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    rows = {line.split("|")[1].strip(): line for line in table}
    assert rows["openvino"].rstrip().endswith("| yes |") and not rows["torch"].rstrip().endswith("| yes |")
    assert "-0.0010" in rows["openvino"] and "| 300 |" in rows["openvino"]
    assert "11 convolutions run in int8" in text and "uses openvino" in text


def test_resolve_bundle(tmp_path: Path) -> None:
    assert resolve_bundle("nfbs_brain_mri_segmentation") == BUNDLES_DIR / "nfbs_brain_mri_segmentation"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "inference.json").write_text("{}")
    assert resolve_bundle(str(tmp_path)) == tmp_path
    with pytest.raises(FileNotFoundError, match="not a bundle"):
        resolve_bundle(str(tmp_path / "configs"))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["engines", "no_such_bundle", "/tmp"], "no_such_bundle"),
        (["engines", "nfbs_brain_mri_segmentation", "/tmp", "--variant", "patchwise"], "variant"),
    ],
    ids=["unknown_bundle", "unknown_variant"],
)
def test_cli_bad_input_is_one_sentence_and_exit_1(argv: list[str], expected: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    err = err.strip()
    assert err.startswith("error: ") and expected in err
    assert "\n" not in err and "Traceback" not in err


def test_an_undefined_metric_never_wins() -> None:
    nan = float("nan")
    assert choose_engine({"torch": {"metric": nan, "seconds_per_case": 9.0},
                          "openvino": {"metric": 0.9, "seconds_per_case": 1.0}}, 0.005) == "torch"
    assert choose_engine({"torch": {"metric": 0.9, "seconds_per_case": 9.0},
                          "openvino_int8": {"metric": nan, "seconds_per_case": 1.0},
                          "openvino": {"metric": 0.9, "seconds_per_case": 2.0}}, 0.005) == "openvino"


def test_non_finite_weights_are_counted(tmp_path) -> None:
    """pocket engines refuses a diverged model (NaN weights) before exporting it: the count it checks."""
    import torch

    from common.engines.choose import non_finite_weights

    net = torch.nn.Conv3d(1, 2, 3)
    torch.save({"model": net.state_dict()}, tmp_path / "ok.pt")
    with torch.no_grad():
        net.weight[0, 0, 0, 0, :2] = float("nan")
        net.bias[1] = float("inf")
    torch.save(net.state_dict(), tmp_path / "diverged.pt")
    assert non_finite_weights(tmp_path / "ok.pt") == 0
    assert non_finite_weights(tmp_path / "diverged.pt") == 3
