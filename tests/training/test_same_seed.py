"""Same seed, same thread count: two trainings give the same metrics (to 1e-6) and the same weights."""

from __future__ import annotations

import pytest
import torch
from bundle_helpers import nfbs_lookalike, run_workflow

BUNDLE = "nfbs_brain_mri_segmentation"
TINY = {"patch_size": [16, 16, 16], "num_workers": 0, "init_filters": 8, "cache_rate": 1.0, "num_samples": 2,
        "epochs": 2, "val_interval": 1, "cpu_threads": 1}


def train(root, data, seed: int) -> tuple[float, dict[str, torch.Tensor]]:
    wf = run_workflow(BUNDLE, ["train.json"], "train", root, **data, **TINY, seed=seed)
    metric = float(wf.parser.get_parsed_content("validate#evaluator").state.metrics["val_mean_dice"])
    weights = torch.load(root / "models" / "last_checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)
    return metric, weights["model"]


def test_same_seed_same_metrics_and_weights(tmp_path):
    data = nfbs_lookalike(tmp_path, cases=4, size=24)
    first, w1 = train(tmp_path / "a", data, seed=7)
    again, w2 = train(tmp_path / "b", data, seed=7)
    other, w3 = train(tmp_path / "c", data, seed=8)
    assert again == pytest.approx(first, abs=1e-6)
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=0, atol=1e-6)
    assert any(not torch.allclose(w3[k], w1[k]) for k in w1 if w1[k].is_floating_point())  # the seed matters
