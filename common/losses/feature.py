"""Feature distillation: student feature maps match the teacher's, point by point."""

from __future__ import annotations

import torch

from common.losses.base import MapDistillationLoss, check_temperature, softmax_kl

MODES = ("kl", "mse")
NORMALISATIONS = (None, "standardize")


def standardize(features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each channel of each sample z-scored over its spatial positions: zero mean, unit variance."""
    flat = features.float().flatten(2)
    mean, std = flat.mean(2, keepdim=True), flat.std(2, unbiased=False, keepdim=True)
    return ((flat - mean) / (std + eps)).reshape(features.shape)


class FeatureDistillationLoss(MapDistillationLoss):
    """Latent feature matching between student and teacher feature maps.

    ``mode="kl"`` (the KD-Net re-implementation's latent loss): features are turned into a
    distribution over channels at every voxel and compared with
    ``T^2 * KL(softmax(f_t / T) || softmax(f_s / T))``.
    ``mode="mse"``: ``(f_s - f_t)^2`` element-wise.

    With ``normalize="standardize"`` both maps are first z-scored per sample and channel over their
    spatial positions, ``z(f) = (f - mean_x f) / std_x f``: the term then compares the maps' shapes,
    not their scales, so its size no longer depends on how large the raw features of a layer are
    (a raw-feature term can dwarf the segmentation loss).

    Args:
        mode: ``"kl"`` or ``"mse"``.
        temperature: ``T > 0`` for ``"kl"``.
        normalize: ``None`` or ``"standardize"``.
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
        normalize: str | None = None,
    ) -> None:
        super().__init__(reduction, resize, grid)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        if normalize not in NORMALISATIONS:
            raise ValueError(f"normalize must be one of {NORMALISATIONS}, got {normalize!r}.")
        self.mode = mode
        self.temperature = check_temperature(temperature)
        self.normalize = normalize

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student, teacher = self.align(student, teacher)
        if self.normalize == "standardize":
            student, teacher = standardize(student), standardize(teacher)
        if self.mode == "mse":
            values = (student.float() - teacher.float()).pow(2)
        else:
            values = softmax_kl(student, teacher, self.temperature) * self.temperature**2
        return self.reduce(values)
