"""The transfer bundle's segmentation loss on pseudo labels."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from monai.utils import LossReduction
from torch import nn
from torch.nn.modules.loss import _Loss


class MaskedDiceCELoss(_Loss):
    """Dice + cross-entropy where voxels labelled ``ignore_index`` count in neither term.

    ::

        L = lambda_dice * Dice(softmax(z)[m], onehot(y)[m]) + lambda_ce * CE(z[m], y[m]),  m = {y != ignore_index}

    Used for pseudo labels with a confidence mask: voxels the teachers are unsure of carry
    ``ignore_index`` instead of a class. MONAI's ``DiceCELoss`` has no ``ignore_index``, so this
    combines MONAI's ``DiceLoss(ignore_index=...)`` with ``torch.nn.CrossEntropyLoss(ignore_index=...)``.
    Without any ignored voxel it equals ``DiceCELoss(to_onehot_y=True, softmax=True)``.

    Args:
        ignore_index: label value to ignore; must not be a class index (``>= C`` or negative).
        lambda_dice, lambda_ce: weights of the two terms, ``>= 0``.
        reduction: ``"mean"`` or ``"sum"`` (over batch, and voxels for CE).

    Shapes: logits (B, C, *spatial) with C >= 2; labels (B, 1, *spatial) of class indices or ``ignore_index``.
    """

    def __init__(
        self, ignore_index: int = 255, lambda_dice: float = 1.0, lambda_ce: float = 1.0, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if self.reduction == LossReduction.NONE.value:
            raise ValueError("MaskedDiceCELoss supports reduction 'mean' or 'sum'.")
        if lambda_dice < 0 or lambda_ce < 0:
            raise ValueError(f"lambda_dice and lambda_ce must be >= 0, got {lambda_dice} and {lambda_ce}.")
        self.ignore_index = int(ignore_index)
        self.lambda_dice, self.lambda_ce = lambda_dice, lambda_ce
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, ignore_index=self.ignore_index, reduction=reduction)
        self.cross_entropy = nn.CrossEntropyLoss(ignore_index=self.ignore_index, reduction=reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.shape[1] < 2:
            raise ValueError(f"MaskedDiceCELoss needs a multi-class head (C >= 2), got {input.shape[1]} channel(s).")
        if 0 <= self.ignore_index < input.shape[1]:
            raise ValueError(f"ignore_index {self.ignore_index} is a class index of a {input.shape[1]}-class head.")
        if target.shape[1] != 1 or target.shape[2:] != input.shape[2:]:
            raise ValueError(
                f"labels of shape (B, 1, *spatial) expected, got {tuple(target.shape)} for logits {tuple(input.shape)}."
            )
        labels = target.long()
        classes = labels[labels != self.ignore_index]
        if classes.numel() and int(classes.max()) >= input.shape[1]:
            raise ValueError(
                f"label value {int(classes.max())} does not fit a {input.shape[1]}-class head "
                f"(the student's out_channels and the labels' classes differ)."
            )
        dice = self.dice(input, labels)
        if bool((labels == self.ignore_index).all()):  # CE over zero voxels is NaN: nothing to learn here
            return self.lambda_dice * dice
        return self.lambda_dice * dice + self.lambda_ce * self.cross_entropy(input, labels[:, 0])
