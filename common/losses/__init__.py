"""Losses: the L2-Dice (+ cross-entropy) of PocketNet and the multi-scale loss of the up-scaling head."""

from common.losses.dice import LOSSES, get_loss, l2_dice_ce_loss, l2_dice_loss, loss_for_arch
from common.losses.multiscale import MultiScaleLoss

__all__ = ["LOSSES", "MultiScaleLoss", "get_loss", "l2_dice_ce_loss", "l2_dice_loss", "loss_for_arch"]
