"""What every student-versus-teacher map loss shares: the temperature check, putting two maps on
one grid (``resize`` / ``grid``), the shape check with a message that says how to fix a mismatch,
and the ``reduction``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

GRIDS = ("teacher", "student")


def check_temperature(temperature: float) -> float:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    return float(temperature)


def resize_to(x: torch.Tensor, size: Sequence[int], mode: str = "bilinear", what: str = "feature") -> torch.Tensor:
    """Interpolate a (B, C, *spatial) map to ``size``; ``bilinear`` means ``trilinear`` for 3-D maps.

    Raises ``ValueError`` when the map cannot be resized to ``size`` (different number of spatial dimensions)."""
    size = tuple(int(n) for n in size)
    if x.ndim - 2 != len(size) or x.ndim < 3:
        raise ValueError(
            f"{what} of shape {tuple(x.shape)} cannot be resized to spatial size {size}: "
            f"{x.ndim - 2}-D and {len(size)}-D maps do not match (tap layers of the same dimensionality)."
        )
    if tuple(x.shape[2:]) == size:
        return x
    if mode == "bilinear" and len(size) == 3:
        mode = "trilinear"
    align = False if mode in ("bilinear", "trilinear", "bicubic") else None
    return F.interpolate(x, size=size, mode=mode, align_corners=align)


def concat_resized(features: Sequence[torch.Tensor], mode: str = "area") -> torch.Tensor:
    """Concatenate feature maps along channels on the grid of the smallest one (a "combination of
    layers", e.g. several teacher layers as one input): larger maps are brought down to it, by
    default by averaging (``"area"``), which does not alias as bilinear sampling does at 4x and
    more."""
    if not features:
        raise ValueError("concat_resized needs at least one feature map.")
    shapes = [tuple(f.shape) for f in features]
    if len({s[0] for s in shapes}) > 1 or len({len(s) for s in shapes}) > 1:
        raise ValueError(f"feature maps of shapes {shapes} cannot be combined: batch size or dimensionality differ.")
    size = min((s[2:] for s in shapes), key=math.prod)
    return torch.cat([resize_to(f, size, mode) for f in features], dim=1)


def reduce_values(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """``values`` averaged (``"mean"``), summed (``"sum"``) or kept (``"none"``)."""
    if reduction == LossReduction.MEAN.value:
        return values.mean()
    if reduction == LossReduction.SUM.value:
        return values.sum()
    return values


def softmax_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Voxel-wise ``KL(softmax(teacher/T) || softmax(student/T))`` over dim 1, kept as (B, 1, ...)."""
    log_q = F.log_softmax(student.float() / temperature, dim=1)
    log_p = F.log_softmax(teacher.float() / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1, keepdim=True)


class MapDistillationLoss(_Loss):
    """Base of the losses that compare a student map with a teacher map.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        resize: ``None`` (spatial sizes must match) or an interpolation mode (``"bilinear"``,
            ``"nearest"``, ...) bringing maps of different sizes to one grid.
        grid: the grid ``resize`` brings both maps to: ``"teacher"`` (the student map is resized)
            or ``"student"`` (the teacher map is resized).
    """

    def __init__(self, reduction: str = "mean", resize: str | None = None, grid: str = "teacher") -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if grid not in GRIDS:
            raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}.")
        self.resize, self.grid = resize, grid

    def align(
        self, student: torch.Tensor, teacher: torch.Tensor, same_channels: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both maps on one grid (when ``resize`` is set), checked to match in batch and spatial size,
        and in channels unless ``same_channels`` is False."""
        what = type(self).__name__
        if student.ndim < 2 or teacher.ndim < 2:
            raise ValueError(
                f"{what}: expected (B, C, ...) tensors, got student {tuple(student.shape)} and teacher "
                f"{tuple(teacher.shape)}."
            )
        if self.resize is not None and student.shape[2:] != teacher.shape[2:]:
            if student.shape[0] != teacher.shape[0]:
                raise ValueError(
                    f"{what}: batch sizes differ, student {tuple(student.shape)}, teacher {tuple(teacher.shape)}."
                )
            if self.grid == "teacher":
                student = resize_to(student, teacher.shape[2:], self.resize, what=f"{what}: student map")
            else:
                teacher = resize_to(teacher, student.shape[2:], self.resize, what=f"{what}: teacher map")

        def compared(shape: torch.Size) -> tuple[int, ...]:
            return tuple(shape) if same_channels else (shape[0], *shape[2:])

        if compared(student.shape) != compared(teacher.shape):
            raise ValueError(
                f"{what}: student shape {tuple(student.shape)} and teacher shape {tuple(teacher.shape)} differ. "
                "Tap layers of matching shape, give the term an adapter that maps the student's channels to the "
                "teacher's, or set `resize` to interpolate one map onto the other's grid."
            )
        return student, teacher

    def reduce(self, values: torch.Tensor) -> torch.Tensor:
        return reduce_values(values, self.reduction)
