"""Losses of the PocketNet papers, as configurations of MONAI's Dice losses.

L2-Dice (eq. 4 of Celaya et al., "PocketNet: A Smaller Neural Network for Medical Image Analysis", IEEE TMI
2022), per sample and class, averaged over classes with the background included::

    sum((y - p)^2) / (sum(y^2) + sum(p^2) + eps)  ==  1 - (2 sum(y p) + eps) / (sum(y^2) + sum(p^2) + eps)

with ``p`` the softmax of the logits. The right-hand side is MONAI's ``DiceLoss`` with squared
denominators and ``smooth_nr = smooth_dr = eps``, so we configure it instead of writing it again.
"""

from __future__ import annotations

from monai.losses import DiceCELoss, DiceLoss
from torch import nn

LOSSES = ("l2dice", "l2dice_ce")


def l2_dice_loss(sigmoid: bool = False, eps: float = 1e-7) -> DiceLoss:
    """L2-Dice on logits; ``sigmoid=True`` for overlapping regions given as multi-channel targets."""
    return DiceLoss(
        include_background=True,
        to_onehot_y=not sigmoid,
        softmax=not sigmoid,
        sigmoid=sigmoid,
        squared_pred=True,
        smooth_nr=eps,
        smooth_dr=eps,
        reduction="mean",
    )


def l2_dice_ce_loss(sigmoid: bool = False, eps: float = 1e-6) -> DiceCELoss:
    """L2-Dice plus cross-entropy on logits (binary cross-entropy with ``sigmoid``), as used with nnUNet."""
    return DiceCELoss(
        include_background=True,
        to_onehot_y=not sigmoid,
        softmax=not sigmoid,
        sigmoid=sigmoid,
        squared_pred=True,
        smooth_nr=eps,
        smooth_dr=eps,
        reduction="mean",
    )


def get_loss(name: str, sigmoid: bool = False) -> nn.Module:
    """Loss by name: ``l2dice`` or ``l2dice_ce``."""
    if name == "l2dice":
        return l2_dice_loss(sigmoid)
    if name == "l2dice_ce":
        return l2_dice_ce_loss(sigmoid)
    raise ValueError(f"Unknown loss {name!r}; valid losses: {', '.join(LOSSES)}.")


def loss_for_arch(arch: str, sigmoid: bool = False) -> nn.Module:
    """The papers' pairing: L2-Dice + CE for nnunet, L2-Dice for the other segmenters."""
    return get_loss("l2dice_ce" if arch == "nnunet" else "l2dice", sigmoid)
