"""Attention transfer: the student's spatial attention follows the teacher's, whatever their widths."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.losses.base import MapDistillationLoss


class AttentionTransferLoss(MapDistillationLoss):
    """Attention transfer (Zagoruyko & Komodakis 2017) between feature maps of any channel counts.

    ::

        A(F) = vec(mean_c F_c^p) / || vec(mean_c F_c^p) ||_2          (one spatial attention map per sample)
        L    = || A(F_s) - A(F_t) ||_2^2                              (per sample; reduced over the batch)

    Channels are averaged away, so student and teacher layers may have different widths; their
    spatial sizes must match, or ``resize`` interpolates the features onto one grid first: the
    teacher's (the student features are resized) or, with ``grid="student"``, the student's.
    ``p = 4`` is what the code of Gorade et al. (ISBI 2024) and of EMKD uses; the original paper used
    ``p = 2``.

    Args:
        power: ``p``, an even integer >= 2 (odd powers would let negative activations cancel).
        resize, grid: see :class:`~common.losses.base.MapDistillationLoss` (here ``resize``
            defaults to ``"bilinear"``).
        reduction: ``"mean"`` or ``"sum"`` over the batch, or ``"none"`` for shape (B,).

    Shapes: student (B, C_s, *spatial_s), teacher (B, C_t, *spatial_t).

    Example::

        >>> AttentionTransferLoss()(torch.rand(2, 8, 16, 16), torch.rand(2, 32, 8, 8)).shape
        torch.Size([])
    """

    def __init__(
        self, power: int = 4, resize: str | None = "bilinear", grid: str = "teacher", reduction: str = "mean"
    ) -> None:
        super().__init__(reduction, resize, grid)
        if int(power) != power or power < 2 or power % 2:
            raise ValueError(f"power must be an even integer >= 2, got {power}.")
        self.power = int(power)

    def attention(self, features: torch.Tensor) -> torch.Tensor:
        """``A(F)``: (B, C, *spatial) -> (B, prod(spatial)), unit L2 norm per sample."""
        return F.normalize(features.float().pow(self.power).mean(dim=1).flatten(1), dim=1)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.ndim < 3 or teacher.ndim < 3:
            raise ValueError(
                f"AttentionTransferLoss: expected (B, C, *spatial) feature maps, got student {tuple(student.shape)} "
                f"and teacher {tuple(teacher.shape)}."
            )
        student, teacher = self.align(student, teacher, same_channels=False)
        return self.reduce((self.attention(student) - self.attention(teacher)).pow(2).sum(dim=1))
