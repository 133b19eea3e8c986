"""Distillation losses in the style of ``monai.losses``: one loss per class, a ``reduction`` argument."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.utils import LossReduction
from torch import nn
from torch.nn.modules.loss import _Loss


def _check_same_shape(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"{what}: student shape {tuple(student.shape)} and teacher shape {tuple(teacher.shape)} differ. "
            "Tap layers of matching shape or give the term an adapter that maps the student's shape to the teacher's."
        )
    if student.ndim < 2:
        raise ValueError(f"{what}: expected (B, C, ...) tensors, got shape {tuple(student.shape)}.")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == LossReduction.MEAN.value:
        return values.mean()
    if reduction == LossReduction.SUM.value:
        return values.sum()
    return values


def _softmax_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Voxel-wise ``KL(softmax(teacher/T) || softmax(student/T))`` over dim 1, kept as (B, 1, ...)."""
    log_q = F.log_softmax(student.float() / temperature, dim=1)
    log_p = F.log_softmax(teacher.float() / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1, keepdim=True)


class LogitDistillationLoss(_Loss):
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

    Shapes: student and teacher logits (B, C, *spatial), identical.
    """

    def __init__(self, temperature: float = 4.0, activation: str = "softmax", reduction: str = "mean") -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}.")
        self.temperature = float(temperature)
        self.activation = activation

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        _check_same_shape(student, teacher, "LogitDistillationLoss")
        t = self.temperature
        if self.activation == "softmax":
            if student.shape[1] < 2:
                raise ValueError("softmax distillation of a single-channel head is always 0: use activation='sigmoid'.")
            kl = _softmax_kl(student, teacher, t)
        else:
            p = torch.sigmoid(teacher.float() / t)
            log_q1 = F.logsigmoid(student.float() / t)
            log_q0 = F.logsigmoid(-student.float() / t)
            log_p1 = F.logsigmoid(teacher.float() / t)
            log_p0 = F.logsigmoid(-teacher.float() / t)
            kl = p * (log_p1 - log_q1) + (1 - p) * (log_p0 - log_q0)
        return _reduce(kl * t * t, self.reduction)


class FeatureDistillationLoss(_Loss):
    """Latent feature matching between student and teacher feature maps.

    ``mode="kl"`` (the KD-Net re-implementation's latent loss): features are turned into a
    distribution over channels at every voxel and compared with
    ``T^2 * KL(softmax(f_t / T) || softmax(f_s / T))``.
    ``mode="mse"``: ``(f_s - f_t)^2`` element-wise.

    Args:
        mode: ``"kl"`` or ``"mse"``.
        temperature: ``T > 0`` for ``"kl"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape (B, 1, *spatial) for kl, input shape for mse).

    Shapes: student and teacher features (B, C, *spatial), identical (use an adapter otherwise).
    """

    def __init__(self, mode: str = "kl", temperature: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if mode not in ("kl", "mse"):
            raise ValueError(f"mode must be 'kl' or 'mse', got {mode!r}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.mode = mode
        self.temperature = float(temperature)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        _check_same_shape(student, teacher, "FeatureDistillationLoss")
        if self.mode == "mse":
            values = (student.float() - teacher.float()).pow(2)
        else:
            values = _softmax_kl(student, teacher, self.temperature) * self.temperature**2
        return _reduce(values, self.reduction)


class DistillationLoss(nn.Module):
    """Weighted sum of named loss terms, each reading named tensors (mdistiller's dict of losses).

    ``terms`` maps a term name to ``{"loss": callable, "inputs": [key, ...], "weight": w,
    "adapter": module (optional)}``. The loss is called as ``loss(*[inputs[k] for k in keys])``;
    an adapter (e.g. a learnable 1x1 convolution) is applied to the first input first. Adapters are
    submodules of this loss: optimise ``loss.parameters()`` with the student, save this module in
    training checkpoints; they are not part of the student network and never reach ``model.pt``.

    Input keys used by :class:`common.engines.DistillationTrainer`: ``"student"`` (student logits),
    ``"label"``, ``"<teacher>"`` (that teacher's logits), ``"student:<layer>"`` and
    ``"<teacher>:<layer>"`` (features tapped by module name).

    ``forward(inputs)`` returns ``(total, terms)``: the weighted sum and a dict of each weighted
    term, for logging by name.
    """

    def __init__(self, terms: Mapping[str, Mapping]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("DistillationLoss needs at least one term.")
        self.losses: dict[str, Callable] = {}
        self.inputs: dict[str, list[str]] = {}
        self.weights: dict[str, float] = {}
        self.adapters = nn.ModuleDict()
        loss_modules = nn.ModuleDict()
        for name, spec in terms.items():
            unknown = set(spec) - {"loss", "inputs", "weight", "adapter"}
            if unknown or "loss" not in spec or "inputs" not in spec:
                raise ValueError(
                    f"term {name!r} must have 'loss' and 'inputs' (optional 'weight', 'adapter'); "
                    f"got keys {sorted(spec)}."
                )
            keys = spec["inputs"]
            if isinstance(keys, str) or not isinstance(keys, Sequence) or not keys:
                raise ValueError(f"term {name!r}: 'inputs' must be a non-empty list of input names, got {keys!r}.")
            self.losses[name] = spec["loss"]
            if isinstance(spec["loss"], nn.Module):
                loss_modules[name] = spec["loss"]
            self.inputs[name] = list(keys)
            self.weights[name] = float(spec.get("weight", 1.0))
            if spec.get("adapter") is not None:
                self.adapters[name] = spec["adapter"]
        self.loss_modules = loss_modules

    @property
    def required_inputs(self) -> set[str]:
        """Every input name some term reads."""
        return {key for keys in self.inputs.values() for key in keys}

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms: dict[str, torch.Tensor] = {}
        for name, loss in self.losses.items():
            missing = [key for key in self.inputs[name] if key not in inputs]
            if missing:
                raise KeyError(f"loss term {name!r} needs {missing}; available inputs: {sorted(inputs)}.")
            args = [inputs[key] for key in self.inputs[name]]
            if name in self.adapters:
                args[0] = self.adapters[name](args[0])
            terms[name] = self.weights[name] * loss(*args).mean()
        total = torch.stack(list(terms.values())).sum()
        return total, terms


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
