"""The HLFD bundle's replication metric: Dice over the slices that hold the target."""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import DiceMetric


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
