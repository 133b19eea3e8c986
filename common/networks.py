"""Small network adapters for the bundles; every layer keeps MONAI's module names, so taps and
checkpoints are those of the MONAI network."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import Conv
from monai.networks.nets import BasicUNet, BasicUNetPlusPlus
from monai.networks.nets.basic_unet import UpCat
from monai.networks.nets.resnet import ResNetFeatures
from monai.utils import ensure_tuple_rep
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


class MultiTaskUNet(BasicUNet):
    """MONAI's ``BasicUNet`` with a second decoder that reconstructs the input image from the same
    encoder (a multi-task segmentation + reconstruction network, as the MTMS-KD teacher).

    ``forward`` returns the segmentation logits, so inferers, metrics and post-processing treat the
    network as any segmentation network. The reconstruction decoder (``recon_upcat_4`` ...
    ``recon_upcat_1``, ``recon_head``: built like the segmentation decoder, with its own weights)
    runs in training mode, or always with ``always_reconstruct``; its output is read through a
    feature tap on ``recon_head`` (e.g. an MSE loss term against the input), and skipped at
    inference, where nothing reads it. Every other module keeps ``BasicUNet``'s name and weights
    layout, so the segmentation path loads into ``BasicUNet`` with ``strict=False``.

    Args:
        recon_channels: channels of the reconstructed image (default: ``in_channels``).
        always_reconstruct: also run the reconstruction decoder in eval mode.
        other args: as ``monai.networks.nets.BasicUNet``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        recon_channels: int | None = None,
        always_reconstruct: bool = False,
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: float | tuple = 0.0,
        upsample: str = "deconv",
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, features, act, norm, bias, dropout, upsample)
        fea = ensure_tuple_rep(features, 6)
        block = (act, norm, bias, dropout, upsample)
        self.recon_upcat_4 = UpCat(spatial_dims, fea[4], fea[3], fea[3], *block)
        self.recon_upcat_3 = UpCat(spatial_dims, fea[3], fea[2], fea[2], *block)
        self.recon_upcat_2 = UpCat(spatial_dims, fea[2], fea[1], fea[1], *block)
        self.recon_upcat_1 = UpCat(spatial_dims, fea[1], fea[0], fea[5], *block, halves=False)
        self.recon_head = Conv[Conv.CONV, spatial_dims](fea[5], recon_channels or in_channels, kernel_size=1)
        self.always_reconstruct = always_reconstruct

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        u = self.upcat_1(self.upcat_2(self.upcat_3(self.upcat_4(x4, x3), x2), x1), x0)
        if self.training or self.always_reconstruct:
            r = self.recon_upcat_1(self.recon_upcat_2(self.recon_upcat_3(self.recon_upcat_4(x4, x3), x2), x1), x0)
            self.recon_head(r)  # read through a tap on ``recon_head``
        return self.final_conv(u)


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
