"""The transfer bundle's distance metric in the units a clinical reader expects."""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor
from monai.metrics import HausdorffDistanceMetric


class PhysicalHausdorffDistanceMetric(HausdorffDistanceMetric):
    """``HausdorffDistanceMetric`` in millimetres: the voxel spacing of each case is read from the
    ground truth's affine (a ``MetaTensor``, e.g. the label as loaded from its file), so that
    ``HausdorffDistance``-style handlers, which pass no ``spacing``, report physical distances.
    An explicit ``spacing`` keyword still wins; a plain tensor falls back to voxel units."""

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        if kwargs.get("spacing") is None and isinstance(y, MetaTensor):
            kwargs["spacing"] = [float(s) for s in torch.as_tensor(y.pixdim).reshape(-1)[: y.ndim - 2]]
        return super()._compute_tensor(y_pred, y, **kwargs)
