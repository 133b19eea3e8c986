"""Learnable adapters: small modules a distillation loss term owns to bring student and teacher
features together (trained with the student, saved in training checkpoints, never exported)."""

from __future__ import annotations

from monai.networks.layers import Conv
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
    """

    def __init__(
        self, in_channels: int, out_channels: int = 64, hidden_channels: int | None = None, spatial_dims: int = 2
    ) -> None:
        conv = Conv[Conv.CONV, spatial_dims]
        if hidden_channels:
            layers = [
                conv(in_channels, hidden_channels, 1),
                nn.ReLU(inplace=True),
                conv(hidden_channels, out_channels, 1),
            ]
        else:
            layers = [conv(in_channels, out_channels, 1)]
        super().__init__(*layers)
