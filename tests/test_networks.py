import pytest
import torch
from monai.networks.nets import BasicUNetPlusPlus

from common.networks import ResNetFCN, UNetPlusPlus


def test_unet_plus_plus_returns_a_tensor_with_monai_weights_and_names():
    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": (4, 4, 8, 8, 16, 4)}
    torch.manual_seed(0)
    ours = UNetPlusPlus(**kwargs).eval()
    monai_net = BasicUNetPlusPlus(**kwargs).eval()
    monai_net.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(ours(x), monai_net(x)[0])
    assert {"conv_1_0", "upcat_1_1", "upcat_0_3"} <= {name for name, _ in ours.named_modules()}
    with pytest.raises(ValueError, match="deep supervision"):
        UNetPlusPlus(**kwargs, deep_supervision=True)


def test_resnet_fcn_upsamples_logits_to_the_input_and_checks_its_size():
    net = ResNetFCN("resnet10", spatial_dims=2, in_channels=1, out_channels=3)
    assert net(torch.randn(2, 1, 64, 96)).shape == (2, 3, 64, 96)
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.randn(1, 1, 48, 64))
