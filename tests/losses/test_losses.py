"""The L2-Dice losses against values computed by hand."""

import math

import pytest
import torch

from common.losses import get_loss, l2_dice_ce_loss, l2_dice_loss, loss_for_arch


def _logits_for(probs: torch.Tensor) -> torch.Tensor:
    return torch.log(probs)  # softmax(log p) == p when p sums to one over channels


def test_l2_dice_matches_hand_computation():
    # one sample, two classes, four pixels; foreground probabilities chosen by hand
    p1 = torch.tensor([0.9, 0.2, 0.6, 0.1])
    probs = torch.stack([1 - p1, p1]).reshape(1, 2, 2, 2)
    label = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 2, 2)
    y1 = label.flatten()
    y0 = 1 - y1
    eps = 1e-7
    per_class = []
    for y, p in ((y0, 1 - p1), (y1, p1)):
        per_class.append(((y - p) ** 2).sum() / ((y**2).sum() + (p**2).sum() + eps))
    expected = float(sum(per_class) / 2)
    got = float(l2_dice_loss()(_logits_for(probs), label))
    assert got == pytest.approx(expected, rel=1e-5)
    # written out: sum (y-p)^2 = 0.22 for both classes; sum p^2 = 1.62 (background), 1.22 (foreground)
    assert got == pytest.approx(0.5 * (0.22 / (2 + 1.62)) + 0.5 * (0.22 / (2 + 1.22)), rel=1e-5)


def test_l2_dice_is_zero_for_perfect_and_one_for_opposite():
    label = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 2, 2)
    onehot = torch.cat([1 - label, label], 1)
    perfect = onehot * 40 - 20
    assert float(l2_dice_loss()(perfect, label)) == pytest.approx(0.0, abs=1e-6)
    assert float(l2_dice_loss()(-perfect, label)) == pytest.approx(1.0, abs=1e-6)


def test_l2_dice_averages_samples_and_classes():
    torch.manual_seed(0)
    logits = torch.randn(3, 3, 5, 5)
    label = torch.randint(0, 3, (3, 1, 5, 5))
    p = torch.softmax(logits, 1)
    y = torch.nn.functional.one_hot(label[:, 0], 3).permute(0, 3, 1, 2).float()
    per = ((y - p) ** 2).sum((2, 3)) / ((y**2).sum((2, 3)) + (p**2).sum((2, 3)) + 1e-7)
    assert float(l2_dice_loss()(logits, label)) == pytest.approx(float(per.mean()), rel=1e-5)


def test_l2_dice_sigmoid_regions():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 4)
    target = (torch.rand(2, 3, 4, 4) > 0.5).float()
    p = torch.sigmoid(logits)
    per = ((target - p) ** 2).sum((2, 3)) / ((target**2).sum((2, 3)) + (p**2).sum((2, 3)) + 1e-7)
    assert float(l2_dice_loss(sigmoid=True)(logits, target)) == pytest.approx(float(per.mean()), rel=1e-5)


def test_l2_dice_ce_adds_cross_entropy():
    torch.manual_seed(2)
    logits = torch.randn(2, 2, 4, 4)
    label = torch.randint(0, 2, (2, 1, 4, 4))
    ce = float(torch.nn.functional.cross_entropy(logits, label[:, 0]))
    p = torch.softmax(logits, 1)
    y = torch.nn.functional.one_hot(label[:, 0], 2).permute(0, 3, 1, 2).float()
    eps = 1e-6
    dice = ((y - p) ** 2).sum((2, 3)) / ((y**2).sum((2, 3)) + (p**2).sum((2, 3)) + eps)
    got = float(l2_dice_ce_loss()(logits, label))
    assert got == pytest.approx(float(dice.mean()) + ce, rel=1e-5)
    assert not math.isclose(got, float(dice.mean()), rel_tol=1e-3)


def test_loss_names():
    assert isinstance(loss_for_arch("nnunet"), type(l2_dice_ce_loss()))
    assert isinstance(loss_for_arch("unet"), type(l2_dice_loss()))
    with pytest.raises(ValueError, match="valid losses: l2dice, l2dice_ce"):
        get_loss("dice2")
