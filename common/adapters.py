"""Learnable adapters: small modules a distillation loss term owns to bring student and teacher
features together (trained with the student, saved in training checkpoints, never exported)."""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.layers import Conv, Pool
from torch import nn


class ProjectionHead(nn.Sequential):
    """A learnable per-position projection of a feature map into an embedding space (1x1
    convolutions: ``conv -> ReLU -> conv``, or one ``conv`` without ``hidden_channels``), as used by
    contrastive distillation to bring student and teacher features of different widths together.

    Args:
        in_channels: channels of the tapped feature map.
        out_channels: embedding dimension.
        hidden_channels: width of the hidden layer; ``None`` or 0 for a single linear 1x1 convolution.
        spatial_dims: 2 or 3.
        pool_size: average-pool the map to this grid first (``AdaptiveAvgPool``), e.g. to contrast
            patches rather than pixels: the head then runs on far fewer positions, which is most of
            its cost at full resolution. No finer than the map's own grid; ``None`` keeps it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 64,
        hidden_channels: int | None = None,
        spatial_dims: int = 2,
        pool_size: int | Sequence[int] | None = None,
    ) -> None:
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = []
        if pool_size is not None:
            layers.append(Pool[Pool.ADAPTIVEAVG, spatial_dims](pool_size))
        if hidden_channels:
            layers += [
                conv(in_channels, hidden_channels, 1),
                nn.ReLU(inplace=True),
                conv(hidden_channels, out_channels, 1),
            ]
        else:
            layers.append(conv(in_channels, out_channels, 1))
        super().__init__(*layers)
