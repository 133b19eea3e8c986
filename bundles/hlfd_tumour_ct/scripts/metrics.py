"""The HLFD bundle's metrics: Dice over the slices that hold the target (the replication figure) and
per-case confusion-matrix measures (sensitivity, precision) for the diagnostics."""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric, DiceMetric
from monai.metrics.confusion_matrix import (
    check_confusion_matrix_metric_name,
    compute_confusion_matrix_metric,
    get_confusion_matrix,
)
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction


class ForegroundSliceDiceMetric(DiceMetric):
    """Dice over the 2-D slices whose ground truth holds foreground, one value per case.

    Papers that train and test on tumour-containing slices only (e.g. HLFD and EMKD on KiTS/LiTS)
    report this figure; it ignores false positives on every other slice, so it is a replication
    aid next to the whole-volume Dice, never a replacement. A slice counts as foreground when any
    non-background channel of the one-hot ground truth is set in it.

    Args:
        slice_dim: spatial axis the volume is sliced along (``-1``: the last, axial for RAS CT).
        other args: as ``monai.metrics.DiceMetric``.

    Shapes: one-hot ``y_pred`` and ``y`` (B, C, *spatial) with C >= 2.
    """

    def __init__(self, slice_dim: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slice_dim = slice_dim

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if y.shape[1] < 2:
            raise ValueError(f"ForegroundSliceDiceMetric needs one-hot labels with C >= 2, got shape {tuple(y.shape)}.")
        spatial = y.ndim - 2
        axis = 2 + (self.slice_dim % spatial)
        other = [d for d in range(1, y.ndim) if d != axis]
        values = []
        for pred_case, label_case in zip(y_pred, y, strict=True):
            keep = label_case[1:].unsqueeze(0).amax(dim=other).bool().reshape(-1)
            index = keep.nonzero().reshape(-1).to(label_case.device)
            values.append(
                super()._compute_tensor(
                    pred_case.unsqueeze(0).index_select(axis, index), label_case.unsqueeze(0).index_select(axis, index)
                )
            )
        return torch.cat(values)


class CaseConfusionMetric(CumulativeIterationMetric):
    """One confusion-matrix measure per case and class, e.g. the share of the tumour found.

    MONAI's ``ConfusionMatrixMetric`` keeps each case's (TP, FP, TN, FN) counts, which
    ``MetricsSaver`` cannot write per case; this metric keeps the measure itself, so evaluation
    writes ``<name>_raw.csv`` with one value per case, beside Dice. That tells a missed tumour
    (low sensitivity, high precision) from a spilled one (high sensitivity, low precision); their
    ratio is the predicted over the true volume: ``sensitivity / precision = (TP + FP) / (TP + FN)``.

    .. math::
        \\text{sensitivity} = \\frac{TP}{TP + FN}, \\qquad \\text{precision} = \\frac{TP}{TP + FP}

    A case whose denominator is 0 (no foreground, or none predicted) gets NaN, left out of the mean.

    Args:
        metric_name: any name ``monai.metrics.compute_confusion_matrix_metric`` knows
            (``"sensitivity"``, ``"precision"``, ``"specificity"``, ``"f1 score"``, ...).
        include_background: whether channel 0 is measured too.
        reduction: how :meth:`aggregate` reduces the per-case values (NaNs left out).

    Shapes: one-hot (or binarised) ``y_pred`` and ``y`` (B, C, *spatial); the buffer is (cases, C').

    Example::

        metric = CaseConfusionMetric("sensitivity")
        metric(y_pred, y)
        metric.get_buffer()  # (B, C - 1): tumour found per case
    """

    def __init__(
        self,
        metric_name: str = "sensitivity",
        include_background: bool = False,
        reduction: MetricReduction | str = MetricReduction.MEAN,
    ) -> None:
        super().__init__()
        try:
            check_confusion_matrix_metric_name(metric_name)
        except NotImplementedError:
            raise ValueError(
                f"metric_name {metric_name!r} is not a confusion-matrix measure MONAI knows; valid names include"
                " 'sensitivity', 'precision', 'specificity', 'accuracy', 'f1 score', 'miss rate', 'fall out'."
            ) from None
        self.metric_name = metric_name
        self.include_background = include_background
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        counts = get_confusion_matrix(y_pred, y, include_background=self.include_background)
        return compute_confusion_matrix_metric(self.metric_name, counts)

    def aggregate(self, reduction: MetricReduction | str | None = None) -> torch.Tensor:  # type: ignore[override]
        value, _ = do_metric_reduction(self.get_buffer(), reduction or self.reduction)
        return value
