"""Progress lines, TensorBoard records and evaluation pictures, on toy ignite engines (the bundles' own runs are
in tests/bundles/test_bundle_user_experience.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from common.metrics.classification_pictures import roc_curve
from common.metrics.pictures import case_slices, pick_cases
from common.training.progress import ProgressHandler, at_debug, duration, progress
from common.training.tracking import LearningRateWriter, TensorBoardWriter, ValidationSlices, center_slice


def _lines(caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(word)]


def test_training_off_a_terminal_logs_one_line_per_epoch_with_the_mean_loss(caplog):
    losses = iter([1.0, 3.0, 2.0, 2.0, 0.5, 0.5])
    engine = Engine(lambda e, batch: {"loss": next(losses)})
    ProgressHandler("epoch", output_transform=lambda out: out["loss"], terminal=False).attach(engine)
    with caplog.at_level(logging.INFO):
        engine.run([0, 1], max_epochs=3)
    lines = _lines(caplog, "epoch ")
    assert [line.split(",")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert [line.split(",")[1] for line in lines] == [" loss 2.0000", " loss 2.0000", " loss 0.5000"]
    assert lines[-1].endswith("ETA 0.0 s") and "ETA" in lines[0]


def test_with_a_time_budget_the_eta_is_the_budget_left(caplog):
    class Budget:  # a TimeBudget 50 s into a 60 s budget
        budget_s = 60.0

        def elapsed_s(self) -> float:
            return 50.0

    engine = Engine(lambda e, batch: {"loss": 1.0})
    ProgressHandler("epoch", output_transform=lambda out: out["loss"], terminal=False,
                    time_budget=Budget()).attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.terminate())  # after the progress line
    with caplog.at_level(logging.INFO):
        engine.run([0], max_epochs=10**9)  # the nominal epochs of a budgeted run
    assert _lines(caplog, f"epoch 1/{10**9}")[0].endswith("ETA 10.0 s")


def test_on_a_terminal_a_bar_shows_the_epoch_with_its_loss(capsys, caplog):
    engine = Engine(lambda e, batch: {"loss": 0.25})
    ProgressHandler("epoch", output_transform=lambda out: out["loss"], terminal=True).attach(engine)
    with caplog.at_level(logging.INFO):
        engine.run([0, 1, 2], max_epochs=2)
    bar = capsys.readouterr().err  # ignite's ProgressBar (tqdm) draws on stderr
    assert "loss=0.25" in bar and "epoch [2/2]: [2/3]" in bar, bar
    assert len(_lines(caplog, "epoch ")) == 2  # and the epoch lines are logged as well


def test_an_inference_off_a_terminal_logs_each_case_by_file_name(caplog):
    from monai.data import MetaTensor

    batches = [{"image": MetaTensor(torch.zeros(1, 1, 2, 2), meta={"filename_or_obj": [f"/d/case{i}.nii.gz"]})}
               for i in range(3)]
    engine = Engine(lambda e, batch: None)
    ProgressHandler("case", terminal=False).attach(engine)
    with caplog.at_level(logging.INFO):
        engine.run(batches, max_epochs=1)
    lines = _lines(caplog, "case ")
    assert [line.split(",")[0] for line in lines] == [f"case {i + 1}/3 case{i}.nii.gz" for i in range(3)]


def test_long_loops_log_every_tenth_and_short_ones_stay_silent(caplog):
    log = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO):
        assert list(progress(range(50), "check", log)) == list(range(50))
        assert list(progress(range(5), "short", log)) == list(range(5))
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [f"check: {i}/50" for i in range(5, 50, 5)]


def test_per_iteration_lines_only_at_debug():
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.INFO)
        assert not at_debug()
        root.setLevel(logging.DEBUG)
        assert at_debug()
    finally:
        root.setLevel(level)
    assert (duration(4.24), duration(125), duration(3723)) == ("4.2 s", "2:05", "1:02:03")


def test_tensorboard_records_lr_and_the_slice_through_the_label(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    label = torch.zeros(1, 8, 8, 6)
    label[0, 2:5, 2:5, 4] = 1  # the foreground is in slice 4 only
    assert center_slice(label[0].numpy()) == 4
    onehot = torch.cat([1 - label, label])
    output = [{"image": torch.rand(1, 8, 8, 6), "label": onehot, "pred": onehot}]
    tb = TensorBoardWriter(tmp_path)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.25)
    trainer, validator = Engine(lambda e, b: None), Engine(lambda e, b: output)
    LearningRateWriter(tb.writer, optimizer).attach(trainer)
    ValidationSlices(tb.writer).attach(validator)
    tb.attach(trainer)
    validator.run([0], max_epochs=1)
    trainer.run([0], max_epochs=2)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("lr")] == [(1, 0.25), (2, 0.25)]
    assert set(events.Tags()["images"]) == {"val_image/0", "val_label/0", "val_pred/0"}
    image = events.Images("val_label/0")[0]
    assert (image.width, image.height) == (8, 8)  # one axial slice of the 8 x 8 x 6 case


def test_no_tensorboard_writer_when_switched_off(tmp_path):
    assert TensorBoardWriter(tmp_path / "off", enabled=False).writer is None
    assert not (tmp_path / "off").exists()


def test_worst_median_best_and_the_slices_through_the_foreground():
    assert pick_cases([0.9, 0.2, 0.5, 0.7]) == {"worst": 1, "median": 2, "best": 0}
    assert pick_cases([0.5, 0.5, 0.5]) == {"worst": 0, "median": 1, "best": 2}  # ties keep list order
    label = np.zeros((10, 12, 14))
    label[2:5, 6:9, 10:13] = 1
    assert case_slices(label) == [(0, 3), (1, 7), (2, 11)]
    assert case_slices(np.zeros((4, 6))) == [(0, 2), (1, 2)]  # empty: the middle (rounded half to even)


def test_roc_area_is_the_mann_whitney_statistic():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    positive = rng.random(200) < 0.4
    scores = np.round(rng.random(200) + 0.6 * positive, 1)  # rounded: many ties
    fpr, tpr, auc = roc_curve(scores, positive)
    u = mannwhitneyu(scores[positive], scores[~positive]).statistic
    assert auc == pytest.approx(u / (positive.sum() * (~positive).sum()), abs=1e-12)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
