"""Feature distillation: student feature maps match the teacher's, point by point."""

from __future__ import annotations

import torch

from common.losses.base import MapDistillationLoss, check_temperature, softmax_kl

MODES = ("kl", "mse")


class FeatureDistillationLoss(MapDistillationLoss):
    """Latent feature matching between student and teacher feature maps.

    ``mode="kl"`` (the KD-Net re-implementation's latent loss): features are turned into a
    distribution over channels at every voxel and compared with
    ``T^2 * KL(softmax(f_t / T) || softmax(f_s / T))``.
    ``mode="mse"``: ``(f_s - f_t)^2`` element-wise.

    Args:
        mode: ``"kl"`` or ``"mse"``.
        temperature: ``T > 0`` for ``"kl"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape (B, 1, *spatial) for kl, input shape for mse).
        resize, grid: see :class:`~common.losses.base.MapDistillationLoss`.

    Shapes: student and teacher features (B, C, *spatial), identical (use an adapter and ``resize`` otherwise).

    Example::

        >>> FeatureDistillationLoss("mse")(torch.ones(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
        tensor(1.)
    """

    def __init__(
        self,
        mode: str = "kl",
        temperature: float = 1.0,
        reduction: str = "mean",
        resize: str | None = None,
        grid: str = "teacher",
    ) -> None:
        super().__init__(reduction, resize, grid)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        self.mode = mode
        self.temperature = check_temperature(temperature)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student, teacher = self.align(student, teacher)
        if self.mode == "mse":
            values = (student.float() - teacher.float()).pow(2)
        else:
            values = softmax_kl(student, teacher, self.temperature) * self.temperature**2
        return self.reduce(values)
