"""Distillation losses in the style of ``monai.losses``: one family per module, re-exported here so
configs name them ``common.losses.<Name>``.

- :mod:`.logit`: :class:`LogitDistillationLoss` (softmax or sigmoid, temperature);
- :mod:`.feature`: :class:`FeatureDistillationLoss` (channel-softmax KL or MSE);
- :mod:`.attention`: :class:`AttentionTransferLoss`;
- :mod:`.contrastive`: :class:`InstanceContrastiveLoss`, :class:`DenseContrastiveLoss`,
  :class:`SupervisedContrastiveLoss`, :func:`gather_batch` (negatives from every process);
- :mod:`.composite`: :class:`DistillationLoss` (named weighted terms owning learnable adapters),
  :func:`select_terms`;
- :mod:`.base`: what they share (grid alignment, temperature, reduction, :func:`concat_resized`).
"""

from common.losses.attention import AttentionTransferLoss
from common.losses.base import MapDistillationLoss, concat_resized, resize_to
from common.losses.composite import DistillationLoss, select_terms
from common.losses.contrastive import (
    DenseContrastiveLoss,
    InstanceContrastiveLoss,
    SupervisedContrastiveLoss,
    gather_batch,
)
from common.losses.feature import FeatureDistillationLoss
from common.losses.logit import LogitDistillationLoss

__all__ = [
    "AttentionTransferLoss",
    "DenseContrastiveLoss",
    "DistillationLoss",
    "FeatureDistillationLoss",
    "InstanceContrastiveLoss",
    "LogitDistillationLoss",
    "MapDistillationLoss",
    "SupervisedContrastiveLoss",
    "concat_resized",
    "gather_batch",
    "resize_to",
    "select_terms",
]
