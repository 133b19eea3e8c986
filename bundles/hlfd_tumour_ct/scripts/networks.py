"""The HLFD bundle's networks: the UNet++ teacher as a tensor-returning network, and the paper's
decoder-less ResNet student. Module names are MONAI's, so taps and checkpoints are those of the
MONAI networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers import Conv
from monai.networks.nets import BasicUNetPlusPlus
from monai.networks.nets.resnet import ResNetFeatures
from torch import nn


class UNetPlusPlus(BasicUNetPlusPlus):
    """MONAI's ``BasicUNetPlusPlus`` returning one tensor, the final logits, instead of a list.

    MONAI's UNet++ returns ``[logits]`` (or one output per depth with ``deep_supervision``), which
    engines, inferers and post-processing that expect a tensor cannot use. Parameters, module names
    (``conv_i_0``, ``upcat_i_j``: node X(i, j) of the paper) and state_dict keys are unchanged, so
    weights load into ``BasicUNetPlusPlus`` as they are. Deep supervision is not offered here.
    """

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("deep_supervision"):
            raise ValueError("UNetPlusPlus returns the final output only; use BasicUNetPlusPlus for deep supervision.")
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[0]


class ResNetFCN(nn.Module):
    """The HLFD paper's decoder-less student: a ResNet encoder, a 1x1 convolution on its last stage
    and the logits upsampled (bilinear) to the input size, a fully convolutional network (FCN-32s).

    The encoder is MONAI's ``ResNetFeatures`` (randomly initialised: nothing is downloaded), so its
    layers carry the same names as in ``FlexibleUNet`` (``encoder.act``, ``encoder.layer1`` ...
    ``encoder.layer4``). The input's spatial size must be divisible by 32.

    Args:
        model_name: ``"resnet10"``, ``"resnet18"``, ``"resnet34"``, ... as in MONAI.
        spatial_dims: 2 or 3.
        in_channels, out_channels: image channels and classes.
    """

    def __init__(
        self, model_name: str = "resnet18", spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2
    ):
        super().__init__()
        self.encoder = ResNetFeatures(model_name, pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels)
        last = self.encoder.layer4[-1]
        width = (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels
        self.classifier = Conv[Conv.CONV, spatial_dims](width, out_channels, kernel_size=1)
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % 32 for s in x.shape[2:]):
            raise ValueError(f"ResNetFCN needs spatial sizes divisible by 32, got {tuple(x.shape[2:])}.")
        logits = self.classifier(self.encoder(x)[-1])
        return F.interpolate(logits, size=x.shape[2:], mode=self.mode, align_corners=False)
