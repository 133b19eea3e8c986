"""The MTMS bundle's teacher: a BasicUNet with a second decoder reconstructing its input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import Conv
from monai.networks.nets import BasicUNet
from monai.networks.nets.basic_unet import UpCat
from monai.utils import ensure_tuple_rep


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
