"""Distillation losses in the style of ``monai.losses``: one loss per class, a ``reduction`` argument."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.utils import LossReduction
from torch import nn
from torch.nn.modules.loss import _Loss


def _check_same_shape(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"{what}: student shape {tuple(student.shape)} and teacher shape {tuple(teacher.shape)} differ. "
            "Tap layers of matching shape, give the term an adapter that maps the student's channels to the "
            "teacher's, or set `resize` to interpolate the student onto the teacher's grid."
        )
    if student.ndim < 2:
        raise ValueError(f"{what}: expected (B, C, ...) tensors, got shape {tuple(student.shape)}.")


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


def _align(
    student: torch.Tensor, teacher: torch.Tensor, resize: str | None, grid: str, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both maps on one grid, the teacher's or the student's (``grid``), when ``resize`` names an
    interpolation mode."""
    if resize is not None and student.shape[2:] != teacher.shape[2:]:
        if student.shape[0] != teacher.shape[0]:
            shapes = f"student {tuple(student.shape)}, teacher {tuple(teacher.shape)}"
            raise ValueError(f"{what}: batch sizes differ, {shapes}.")
        if grid == "teacher":
            student = resize_to(student, teacher.shape[2:], resize, what=f"{what}: student map")
        else:
            teacher = resize_to(teacher, student.shape[2:], resize, what=f"{what}: teacher map")
    return student, teacher


def _check_grid(grid: str) -> str:
    if grid not in ("teacher", "student"):
        raise ValueError(f"grid must be 'teacher' or 'student', got {grid!r}.")
    return grid


def concat_resized(features: Sequence[torch.Tensor], mode: str = "bilinear") -> torch.Tensor:
    """Concatenate feature maps along channels on the grid of the smallest one (a "combination of
    layers", e.g. HLFD's teacher middle layers): larger maps are interpolated down to it."""
    if not features:
        raise ValueError("concat_resized needs at least one feature map.")
    shapes = [tuple(f.shape) for f in features]
    if len({s[0] for s in shapes}) > 1 or len({len(s) for s in shapes}) > 1:
        raise ValueError(f"feature maps of shapes {shapes} cannot be combined: batch size or dimensionality differ.")
    size = min((s[2:] for s in shapes), key=math.prod)
    return torch.cat([resize_to(f, size, mode) for f in features], dim=1)


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
        resize: ``None`` (spatial sizes must match) or an interpolation mode (``"bilinear"``,
            ``"nearest"``, ...) with which maps of different sizes are resized to one grid, e.g. a
            1x1 adapter's output on an intermediate student layer against the teacher's logits.
        grid: the grid ``resize`` brings both maps to: ``"teacher"`` (the student map is resized)
            or ``"student"`` (the teacher map is resized).

    Shapes: student and teacher logits (B, C, *spatial); identical unless ``resize`` is set.
    """

    def __init__(
        self,
        temperature: float = 4.0,
        activation: str = "softmax",
        reduction: str = "mean",
        resize: str | None = None,
        grid: str = "teacher",
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}.")
        self.temperature = float(temperature)
        self.activation = activation
        self.resize, self.grid = resize, _check_grid(grid)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student, teacher = _align(student, teacher, self.resize, self.grid, "LogitDistillationLoss")
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
        resize: ``None`` or an interpolation mode resizing maps of different sizes to one grid.
        grid: ``"teacher"`` (resize the student map) or ``"student"`` (resize the teacher map).

    Shapes: student and teacher features (B, C, *spatial), identical (use an adapter and ``resize`` otherwise).
    """

    def __init__(
        self,
        mode: str = "kl",
        temperature: float = 1.0,
        reduction: str = "mean",
        resize: str | None = None,
        grid: str = "teacher",
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if mode not in ("kl", "mse"):
            raise ValueError(f"mode must be 'kl' or 'mse', got {mode!r}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.mode = mode
        self.temperature = float(temperature)
        self.resize, self.grid = resize, _check_grid(grid)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student, teacher = _align(student, teacher, self.resize, self.grid, "FeatureDistillationLoss")
        _check_same_shape(student, teacher, "FeatureDistillationLoss")
        if self.mode == "mse":
            values = (student.float() - teacher.float()).pow(2)
        else:
            values = _softmax_kl(student, teacher, self.temperature) * self.temperature**2
        return _reduce(values, self.reduction)


class AttentionTransferLoss(_Loss):
    """Attention transfer (Zagoruyko & Komodakis 2017) between feature maps of any channel counts.

    ::

        A(F) = vec(mean_c F_c^p) / || vec(mean_c F_c^p) ||_2          (one spatial attention map per sample)
        L    = || A(F_s) - A(F_t) ||_2^2                              (per sample; reduced over the batch)

    Channels are averaged away, so student and teacher layers may have different widths; their
    spatial sizes must match, or ``resize`` interpolates the features onto one grid first: the
    teacher's (the student features are resized) or, with ``grid="student"``, the student's (as
    HLFD's code does for a combination of teacher layers). ``p = 4`` is what the HLFD/EMKD code
    uses; the original paper used ``p = 2``.

    Args:
        power: ``p``, an even integer >= 2 (odd powers would let negative activations cancel).
        resize: ``None`` or an interpolation mode (``"bilinear"``, ``"nearest"``, ...).
        grid: ``"teacher"`` or ``"student"``, the grid ``resize`` brings both maps to.
        reduction: ``"mean"`` or ``"sum"`` over the batch, or ``"none"`` for shape (B,).

    Shapes: student (B, C_s, *spatial_s), teacher (B, C_t, *spatial_t).
    """

    def __init__(
        self, power: int = 4, resize: str | None = "bilinear", grid: str = "teacher", reduction: str = "mean"
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if int(power) != power or power < 2 or power % 2:
            raise ValueError(f"power must be an even integer >= 2, got {power}.")
        self.power = int(power)
        self.resize, self.grid = resize, _check_grid(grid)

    def attention(self, features: torch.Tensor) -> torch.Tensor:
        """``A(F)``: (B, C, *spatial) -> (B, prod(spatial)), unit L2 norm per sample."""
        return F.normalize(features.float().pow(self.power).mean(dim=1).flatten(1), dim=1)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.ndim < 3 or teacher.ndim < 3:
            raise ValueError(
                f"AttentionTransferLoss: expected (B, C, *spatial) feature maps, got student {tuple(student.shape)} "
                f"and teacher {tuple(teacher.shape)}."
            )
        student, teacher = _align(student, teacher, self.resize, self.grid, "AttentionTransferLoss")
        if student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]:
            raise ValueError(
                f"AttentionTransferLoss: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ in "
                "batch or spatial size; set `resize` (e.g. 'bilinear') to put the student on the teacher's grid."
            )
        values = (self.attention(student) - self.attention(teacher)).pow(2).sum(dim=1)
        return _reduce(values, self.reduction)


def gather_batch(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x`` (B, ...) of every process of a ``torch.distributed`` run, concatenated along the batch
    in rank order, and where this process's part starts; ``(x, 0)`` outside a distributed run.

    The gather is differentiable: gradients reach each process's own part, so a loss over the
    gathered batch, averaged by DDP, has the gradient one process would have on the whole batch.
    Every process must hold the same batch size (``DistributedSampler(even_divisible=True)``).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    if len({int(size) for size in sizes}) > 1:
        raise ValueError(
            f"batch sizes differ across processes ({[int(size) for size in sizes]}); a contrastive "
            "loss gathers negatives from every process and needs equal batches (even_divisible)."
        )
    return torch.cat(dist_fn.all_gather(x.contiguous())), dist.get_rank() * x.shape[0]


def _check_batch_for_negatives(n: int, what: str) -> None:
    if n < 2:
        raise ValueError(
            f"{what}: a batch of {n} image(s) has no in-batch negatives; contrastive distillation needs at least 2 "
            "(8 or more is better): raise the batch size, or the number of slices sampled per volume."
        )


class InstanceContrastiveLoss(_Loss):
    """Instance-level InfoNCE between student and teacher feature maps (MTMS-KD's contrastive term).

    Each image's map is flattened and L2-normalised, ``s_i = vec(F_s^i) / ||vec(F_s^i)||`` (and
    ``t_j`` for the teacher); the teacher map of the same image is the positive, the teacher maps
    of the other images in the batch are the negatives::

        L_i = -log( exp(s_i . t_i / tau) / sum_j exp(s_i . t_j / tau) ),   j over the batch

    Under ``torch.distributed`` the teacher maps of every process are gathered
    (:func:`gather_batch`), so the negatives are those of the global batch, as in one process.

    Labels are not used (this is what the official code computes despite its "supervised" name;
    see :class:`SupervisedContrastiveLoss` for the label-aware variant). Student and teacher maps
    must have the same shape: project them to one width with learnable heads (the term's
    adapters) and set ``resize`` when their grids differ.

    Args:
        temperature: ``tau > 0`` (0.4 in the official code).
        resize: ``None`` or an interpolation mode bringing both maps to one grid.
        grid: ``"teacher"`` or ``"student"``, the grid ``resize`` brings both maps to.
        reduction: ``"mean"`` or ``"sum"`` over the batch, or ``"none"`` for shape (B,).

    Shapes: student and teacher (B, C, *spatial) with B >= 2 (over all processes).
    """

    def __init__(
        self, temperature: float = 0.4, resize: str | None = None, grid: str = "student", reduction: str = "mean"
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)
        self.resize, self.grid = resize, _check_grid(grid)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``labels`` are ignored; they are accepted so that this loss and
        :class:`SupervisedContrastiveLoss` are interchangeable in a config."""
        student, teacher = _align(student, teacher, self.resize, self.grid, "InstanceContrastiveLoss")
        _check_same_shape(student, teacher, "InstanceContrastiveLoss")
        s = F.normalize(student.float().flatten(1), dim=1)
        t, offset = gather_batch(F.normalize(teacher.float().flatten(1), dim=1))
        _check_batch_for_negatives(t.shape[0], "InstanceContrastiveLoss")
        logits = s @ t.T / self.temperature
        values = F.cross_entropy(logits, torch.arange(len(s), device=s.device) + offset, reduction="none")
        return _reduce(values, self.reduction)


class SupervisedContrastiveLoss(_Loss):
    """Label-aware (supervised) contrastive distillation between class regions of student and
    teacher feature maps.

    The label map, one-hot encoded, is averaged onto each feature grid (soft region masks
    ``w_{b,k}``); every class region present in an image gives one L2-normalised embedding per
    network, ``s_{b,k} = norm(sum_x w f_s / sum_x w)`` and ``t_{b,k}`` likewise. Each student
    region is an anchor; the teacher regions *of the same class* in any image of the batch are its
    positives ``P(i)``, the teacher regions of other classes its negatives (Khosla et al. 2020,
    across networks)::

        L_i = -1/|P(i)| sum_{p in P(i)} log( exp(s_i . t_p / tau) / sum_a exp(s_i . t_a / tau) )

    Under ``torch.distributed`` the teacher regions of every process are gathered
    (:func:`gather_batch`): positives and negatives come from the global batch, anchors stay local
    (the mean over anchors is then per process, averaged by DDP).

    A batch in which only one class is present has no negatives; the loss is then 0 (with the
    graph kept, so distributed training sees every parameter). Student and teacher maps may have
    different grids (each is pooled with the label resized to it) but must have one width (use
    learnable projection heads as the term's adapters).

    Args:
        num_classes: classes of the label map (including background).
        temperature: ``tau > 0``.
        include_background: whether background regions take part (as anchors and negatives).
        min_fraction: a region counts as present when it covers at least this fraction of the map.
        reduction: ``"mean"`` or ``"sum"`` over anchors, or ``"none"`` for one value per anchor.

    Shapes: student (B, C, *spatial_s), teacher (B, C, *spatial_t), labels (B, 1, *spatial) of class indices.
    """

    def __init__(
        self,
        num_classes: int,
        temperature: float = 0.4,
        include_background: bool = True,
        min_fraction: float = 1e-3,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background and at least one class), got {num_classes}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.num_classes = int(num_classes)
        self.temperature = float(temperature)
        self.include_background = include_background
        self.min_fraction = float(min_fraction)

    def regions(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised region embeddings (B, K, C) and which regions are present (B, K)."""
        onehot = F.one_hot(labels[:, 0].long(), self.num_classes).movedim(-1, 1).float()
        masks = F.interpolate(onehot, size=features.shape[2:], mode="area").flatten(2)  # (B, K, N)
        sums = torch.einsum("bkn,bcn->bkc", masks, features.float().flatten(2))
        area = masks.sum(2)
        present = area >= self.min_fraction * masks.shape[2]
        if not self.include_background:
            present[:, 0] = False
        return F.normalize(sums / area.clamp_min(1e-8).unsqueeze(2), dim=2), present

    def _present(self, embeddings: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The present regions' embeddings (N, C) and classes (N,), ordered by image then class."""
        classes = torch.arange(self.num_classes, device=present.device).expand_as(present)
        return embeddings[present], classes[present]

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        what = "SupervisedContrastiveLoss"
        if student.ndim < 3 or student.shape[:2] != teacher.shape[:2]:
            raise ValueError(
                f"{what}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must share batch size and "
                "width (project both to one width with the term's adapters)."
            )
        if labels.shape[0] != student.shape[0] or labels.shape[1] != 1 or labels.ndim != student.ndim:
            raise ValueError(f"{what}: labels of shape (B, 1, *spatial) expected, got {tuple(labels.shape)}.")
        if int(labels.max()) >= self.num_classes or int(labels.min()) < 0:
            raise ValueError(f"{what}: label values {int(labels.min())}..{int(labels.max())} exceed num_classes.")
        s, s_classes = self._present(*self.regions(student, labels))
        t_embeddings, t_present = self.regions(teacher, labels)
        t_embeddings, _ = gather_batch(t_embeddings)
        t_present, _ = gather_batch(t_present.float())
        _check_batch_for_negatives(t_present.shape[0], what)
        t, t_classes = self._present(t_embeddings, t_present.bool())
        positives = (s_classes[:, None] == t_classes[None, :]).float()
        if s.shape[0] == 0 or bool(positives.all()):  # one class in the batch: nothing to contrast
            return (student.sum() + teacher.sum()) * 0.0
        log_prob = F.log_softmax(s @ t.T / self.temperature, dim=1)
        anchors = positives.sum(1) > 0  # a tiny region can pass the area threshold on one grid only
        values = -(positives * log_prob).sum(1)[anchors] / positives.sum(1)[anchors]
        return _reduce(values, self.reduction)


InputSpec = str | Sequence[str]


def select_terms(terms: Mapping[str, Mapping], names: Sequence[str], prefix: str = "") -> dict[str, Mapping]:
    """The terms ``prefix + name`` for each of ``names``, e.g. the scales an ablation distils
    (``select_terms(contrastive_terms, ["bottleneck"], prefix="contrast_")``); an unknown name is
    an error listing the valid ones."""
    valid = [key.removeprefix(prefix) for key in terms if key.startswith(prefix)]
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ValueError(f"unknown term(s) {unknown}; choose from {valid}.")
    return {prefix + name: terms[prefix + name] for name in names}


class DistillationLoss(nn.Module):
    """Weighted sum of named loss terms, each reading named tensors (mdistiller's dict of losses).

    ``terms`` maps a term name to ``{"loss": callable, "inputs": [spec, ...], "weight": w,
    "adapter": module, "adapters": [module | None, ...]}`` (``weight`` and the adapters optional).
    An input ``spec`` is a key, or a list of keys whose maps are combined: concatenated along
    channels on the grid of the smallest (:func:`concat_resized`, e.g. several teacher layers).
    ``adapters`` holds one optional module per input, applied to that input before the loss (e.g.
    a learnable 1x1 convolution); ``adapter`` is short for an adapter on the first (student) input.
    The loss is then called as ``loss(*inputs)``. Adapters are submodules of this loss: optimise
    ``loss.parameters()`` with the student and save this module in training checkpoints; they
    are not part of the student network and never reach ``model.pt``.

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
        self.inputs: dict[str, list[InputSpec]] = {}
        self.weights: dict[str, float] = {}
        self.adapters = nn.ModuleDict()
        loss_modules = nn.ModuleDict()
        for name, spec in terms.items():
            unknown = set(spec) - {"loss", "inputs", "weight", "adapter", "adapters"}
            if unknown or "loss" not in spec or "inputs" not in spec:
                raise ValueError(
                    f"term {name!r} must have 'loss' and 'inputs' (optional 'weight', 'adapter', 'adapters'); "
                    f"got keys {sorted(spec)}."
                )
            keys = spec["inputs"]
            if isinstance(keys, str) or not isinstance(keys, Sequence) or not keys:
                raise ValueError(f"term {name!r}: 'inputs' must be a non-empty list of input names, got {keys!r}.")
            for key in keys:
                if not isinstance(key, str) and (not isinstance(key, Sequence) or not key):
                    raise ValueError(f"term {name!r}: input {key!r} is neither a name nor a non-empty list of names.")
            self.losses[name] = spec["loss"]
            if isinstance(spec["loss"], nn.Module):
                loss_modules[name] = spec["loss"]
            self.inputs[name] = [key if isinstance(key, str) else list(key) for key in keys]
            self.weights[name] = float(spec.get("weight", 1.0))
            adapters = self._adapters(name, spec, len(keys))
            if adapters is not None:
                self.adapters[name] = adapters
        self.loss_modules = loss_modules

    @staticmethod
    def _adapters(name: str, spec: Mapping, n_inputs: int) -> nn.ModuleList | None:
        if spec.get("adapter") is not None and spec.get("adapters") is not None:
            raise ValueError(f"term {name!r}: give 'adapter' (first input) or 'adapters' (one per input), not both.")
        adapters = spec.get("adapters")
        if adapters is None:
            adapters = [spec.get("adapter")] + [None] * (n_inputs - 1)
        if len(adapters) != n_inputs:
            raise ValueError(f"term {name!r}: {len(adapters)} adapters for {n_inputs} inputs; use null for none.")
        if all(a is None for a in adapters):
            return None
        return nn.ModuleList([nn.Identity() if a is None else a for a in adapters])

    @property
    def required_inputs(self) -> set[str]:
        """Every input name some term reads."""
        specs = [spec for specs in self.inputs.values() for spec in specs]
        return {key for spec in specs for key in ([spec] if isinstance(spec, str) else spec)}

    def _gather(self, name: str, spec: InputSpec, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        keys = [spec] if isinstance(spec, str) else spec
        missing = [key for key in keys if key not in inputs]
        if missing:
            raise KeyError(f"loss term {name!r} needs {missing}; available inputs: {sorted(inputs)}.")
        if isinstance(spec, str):
            return inputs[spec]
        try:
            return concat_resized([inputs[key] for key in keys])
        except ValueError as e:
            raise ValueError(f"loss term {name!r}, combining {keys}: {e}") from e

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms: dict[str, torch.Tensor] = {}
        for name, loss in self.losses.items():
            args = [self._gather(name, spec, inputs) for spec in self.inputs[name]]
            if name in self.adapters:
                for i, adapter in enumerate(self.adapters[name]):
                    try:
                        args[i] = adapter(args[i])
                    except RuntimeError as e:
                        raise RuntimeError(
                            f"adapter {i} of loss term {name!r} failed on input {self.inputs[name][i]!r} "
                            f"of shape {tuple(args[i].shape)}: {e}"
                        ) from e
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
