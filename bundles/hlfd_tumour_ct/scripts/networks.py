"""The HLFD bundle's networks: the UNet++ teacher as a tensor-returning network, and the paper's
decoder-less ResNet student. Module names are MONAI's, so taps and checkpoints are those of the
MONAI networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers import Conv
from monai.networks.nets import BasicUNetPlusPlus
from monai.networks.nets.resnet import ResNet, get_inplanes, resnet_params
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

    The encoder is MONAI's ``ResNet`` (randomly initialised: nothing is downloaded) built like
    torchvision's ResNet the paper uses: a 7x7 stride-2 stem, max pooling, and projection shortcuts
    (1x1 convolution + batch norm, ``shortcut_type="B"``) where a stage changes width. MONAI's
    ``ResNetFeatures`` uses MedicalNet's zero-padding shortcut (``"A"``) for ResNet-18/34, whose
    ``.data`` read cannot be exported (TorchScript, ONNX); this network scripts and traces. Layers
    carry the names of ``FlexibleUNet``'s encoder (``encoder.act``, ``encoder.layer1`` ...
    ``encoder.layer4``). The input's spatial size must be divisible by 32.

    Args:
        model_name: ``"resnet10"``, ``"resnet18"``, ``"resnet34"``, ... as in MONAI (block and depth).
        spatial_dims: 2 or 3.
        in_channels, out_channels: image channels and classes.
    """

    def __init__(
        self, model_name: str = "resnet18", spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2
    ):
        super().__init__()
        if model_name not in resnet_params:
            raise ValueError(f"model_name {model_name!r}: use one of {', '.join(resnet_params)}.")
        block, layers = resnet_params[model_name][:2]
        self.encoder = ResNet(
            block, layers, get_inplanes(), spatial_dims=spatial_dims, n_input_channels=in_channels,
            conv1_t_stride=2, shortcut_type="B", bias_downsample=False, feed_forward=False,
        )  # fmt: skip
        last = self.encoder.layer4[-1]
        width = (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels
        self.classifier = Conv[Conv.CONV, spatial_dims](width, out_channels, kernel_size=1)
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        for extent in size:
            if extent % 32 != 0 and not torch.jit.is_tracing():  # a trace keeps the sizes symbolic
                raise ValueError(f"ResNetFCN needs spatial sizes divisible by 32, got {size}.")
        encoder = self.encoder
        features = encoder.maxpool(encoder.act(encoder.bn1(encoder.conv1(x))))
        features = encoder.layer4(encoder.layer3(encoder.layer2(encoder.layer1(features))))
        return F.interpolate(self.classifier(features), size=size, mode=self.mode, align_corners=False)
