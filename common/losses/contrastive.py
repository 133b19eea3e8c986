"""Contrastive distillation: a student embedding is drawn to its teacher counterpart and pushed away
from the others (InfoNCE), per image, per position or per labelled region."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from common.losses.base import MapDistillationLoss, check_temperature, reduce_values


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


def _info_nce(
    anchors: torch.Tensor,
    keys: torch.Tensor,
    temperature: float,
    check_count: Callable[[int], None],
    anchor_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-anchor InfoNCE (N,): anchor ``i``'s positive is this process's key ``i``, every other key
    of every process (:func:`gather_batch`) a negative. ``check_count(n)`` raises when the ``n``
    gathered keys leave no negative. Keys are L2-normalised rows; so are the anchors, or
    ``anchor_norms`` (N, 1) holds their norms and the similarities are divided by them."""
    keys, offset = gather_batch(keys)
    check_count(keys.shape[0])
    logits = anchors @ keys.T
    if anchor_norms is not None:
        logits = logits / anchor_norms
    logits = logits / temperature
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device) + offset, reduction="none")


class InstanceContrastiveLoss(MapDistillationLoss):
    """Instance-level InfoNCE between student and teacher feature maps (e.g. the contrastive term of
    multi-task multi-scale contrastive KD, Biswas 2024).

    Each image's map is flattened and L2-normalised, ``s_i = vec(F_s^i) / ||vec(F_s^i)||`` (and
    ``t_j`` for the teacher); the teacher map of the same image is the positive, the teacher maps
    of the other images in the batch are the negatives::

        L_i = -log( exp(s_i . t_i / tau) / sum_j exp(s_i . t_j / tau) ),   j over the batch

    Under ``torch.distributed`` the teacher maps of every process are gathered
    (:func:`gather_batch`), so the negatives are those of the global batch, as in one process.

    Labels are not used (what that paper's code computes despite its "supervised" name;
    see :class:`SupervisedContrastiveLoss` for the label-aware variant). Student and teacher maps
    must have the same shape: project them to one width with learnable heads (the term's
    adapters) and set ``resize`` when their grids differ.

    Args:
        temperature: ``tau > 0`` (0.4 in that paper's code).
        resize, grid: see :class:`~common.losses.base.MapDistillationLoss` (``grid`` defaults to
            ``"student"`` here).
        reduction: ``"mean"`` or ``"sum"`` over the batch, or ``"none"`` for shape (B,).

    Shapes: student and teacher (B, C, *spatial) with B >= 2 (over all processes).

    Example::

        >>> maps = torch.eye(2).view(2, 2, 1, 1)
        >>> InstanceContrastiveLoss(temperature=0.5)(maps, maps)  # log(1 + e^-2)
        tensor(0.1269)
    """

    def __init__(
        self, temperature: float = 0.4, resize: str | None = None, grid: str = "student", reduction: str = "mean"
    ) -> None:
        super().__init__(reduction, resize, grid)
        self.temperature = check_temperature(temperature)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student, teacher = self.align(student, teacher)
        s = student.float().flatten(1)
        t = F.normalize(teacher.float().flatten(1), dim=1)
        # The B x B similarities are divided by the student's norms (the clamp is F.normalize's eps)
        # instead of normalising a copy of whole maps (full resolution at a decoder tap) and
        # back-propagating through it: the same values, one map-sized copy and its backward fewer.
        norms = s.norm(dim=1, keepdim=True).clamp_min(1e-12)
        check = partial(_check_batch_for_negatives, what=type(self).__name__)
        return self.reduce(_info_nce(s, t, self.temperature, check, anchor_norms=norms))


class DenseContrastiveLoss(MapDistillationLoss):
    """Position-level (dense) InfoNCE between student and teacher feature maps: each position of
    each image is an anchor, the teacher's embedding at the same position of the same image its
    positive, the teacher's embeddings at every other position of this and the other images its
    negatives (pixel-to-pixel contrast across networks, as in CIRKD, Yang et al. 2022).

    Every position's channel vector is L2-normalised, ``s_p`` for the student and ``t_q`` for the
    teacher, ``p, q`` running over the positions of the whole batch::

        L_p = -log( exp(s_p . t_p / tau) / sum_q exp(s_p . t_q / tau) )

    Whole-map (instance) contrast compares one vector per image, so it cannot tell apart crops that
    look alike to the teacher; here the negatives are the other structures of the same crops, and
    a student that copies the teacher's map drives the loss towards its floor as long as the
    teacher's positions differ from each other. Pool both maps to a coarse grid first (a
    ``ProjectionHead`` with ``pool_size`` for the student, ``resize="area"`` for the teacher) to
    contrast patches rather than pixels, and keep the heads cheap. With ``num_positions``, that
    many positions of the batch are drawn at random (from ``torch``'s global generator) as anchors
    and keys, bounding the ``positions x positions`` similarity matrix. Under ``torch.distributed``
    the teacher embeddings of every process are gathered (:func:`gather_batch`).

    Args:
        temperature: ``tau > 0``.
        num_positions: positions drawn per batch (per process), or ``None`` for all of them.
        resize, grid: see :class:`~common.losses.base.MapDistillationLoss` (``grid`` defaults to
            ``"student"`` here).
        reduction: ``"mean"`` or ``"sum"`` over anchors, or ``"none"`` for one value per anchor.

    Shapes: student and teacher (B, C, *spatial) with at least 2 positions in all.

    Example::

        >>> maps = torch.eye(2).view(1, 2, 1, 2)  # one image, two positions: [1, 0] and [0, 1]
        >>> DenseContrastiveLoss(temperature=0.5)(maps, maps)  # log(1 + e^-2)
        tensor(0.1269)
    """

    def __init__(
        self,
        temperature: float = 0.1,
        num_positions: int | None = None,
        resize: str | None = None,
        grid: str = "student",
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction, resize, grid)
        self.temperature = check_temperature(temperature)
        if num_positions is not None and num_positions < 2:
            raise ValueError(f"num_positions must be None or >= 2 (one positive and a negative), got {num_positions}.")
        self.num_positions = num_positions

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student, teacher = self.align(student, teacher)
        channels = student.shape[1]
        s = F.normalize(student.float().flatten(2), dim=1).transpose(1, 2).reshape(-1, channels)
        t = F.normalize(teacher.float().flatten(2), dim=1).transpose(1, 2).reshape(-1, channels)
        if self.num_positions is not None and s.shape[0] > self.num_positions:
            drawn = torch.randperm(s.shape[0], device=s.device)[: self.num_positions]
            s, t = s[drawn], t[drawn]
        return self.reduce(_info_nce(s, t, self.temperature, self._check_positions))

    def _check_positions(self, n: int) -> None:
        if n < 2:
            raise ValueError(
                f"{type(self).__name__}: a batch with {n} position has no negatives; tap a map with more "
                "positions or pool it less."
            )


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

    Example::

        >>> labels = torch.tensor([0, 1]).view(2, 1, 1, 1).expand(2, 1, 4, 4)
        >>> maps = torch.eye(2).view(2, 2, 1, 1).expand(2, 2, 4, 4)
        >>> SupervisedContrastiveLoss(num_classes=2, temperature=0.5)(maps, maps, labels)  # log(1 + e^-2)
        tensor(0.1269)
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
        self.num_classes = int(num_classes)
        self.temperature = check_temperature(temperature)
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
        what = type(self).__name__
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
        return reduce_values(values, self.reduction)
