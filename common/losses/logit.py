"""Logit distillation: the student's class distribution follows the teacher's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.losses.base import MapDistillationLoss, check_temperature, softmax_kl

ACTIVATIONS = ("softmax", "sigmoid")


class LogitDistillationLoss(MapDistillationLoss):
    """Temperature-scaled logit distillation (Hinton et al. 2015) for segmentation heads.

    softmax (multi-class head, classes along dim 1)::

        L = T^2 * KL(softmax(z_t / T) || softmax(z_s / T)),  KL summed over classes, per voxel

    sigmoid (multi-label or binary head, each channel an independent Bernoulli)::

        L = T^2 * [p log(p / q) + (1 - p) log((1 - p) / (1 - q))],  p = sigma(z_t / T), q = sigma(z_s / T)

    The ``T^2`` factor keeps gradient magnitudes independent of ``T``. A single-channel softmax
    head would make this loss identically zero, so it is rejected: use ``activation="sigmoid"``.

    Args:
        temperature: ``T > 0``.
        activation: ``"softmax"`` or ``"sigmoid"``.
        reduction: ``"mean"`` (over batch and voxels, and channels for sigmoid), ``"sum"`` or
            ``"none"``, which returns shape (B, 1, *spatial) for softmax and (B, C, *spatial) for sigmoid.
        resize, grid: see :class:`~common.losses.base.MapDistillationLoss`; e.g. a 1x1 adapter's
            output on an intermediate student layer against the teacher's logits.

    Shapes: student and teacher logits (B, C, *spatial); identical unless ``resize`` is set.

    Example::

        >>> loss = LogitDistillationLoss(temperature=4.0)
        >>> loss(torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)).shape
        torch.Size([])
    """

    def __init__(
        self,
        temperature: float = 4.0,
        activation: str = "softmax",
        reduction: str = "mean",
        resize: str | None = None,
        grid: str = "teacher",
    ) -> None:
        super().__init__(reduction, resize, grid)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}.")
        self.temperature = check_temperature(temperature)
        self.activation = activation

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student, teacher = self.align(student, teacher)
        t = self.temperature
        if self.activation == "softmax":
            if student.shape[1] < 2:
                raise ValueError("softmax distillation of a single-channel head is always 0: use activation='sigmoid'.")
            kl = softmax_kl(student, teacher, t)
        else:
            p = torch.sigmoid(teacher.float() / t)
            log_q1 = F.logsigmoid(student.float() / t)
            log_q0 = F.logsigmoid(-student.float() / t)
            log_p1 = F.logsigmoid(teacher.float() / t)
            log_p0 = F.logsigmoid(-teacher.float() / t)
            kl = p * (log_p1 - log_q1) + (1 - p) * (log_p0 - log_q0)
        return self.reduce(kl * t * t)
