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


def test_multi_task_unet_segments_reconstructs_for_taps_in_training_and_keeps_basic_unet_names():
    from monai.networks.nets import BasicUNet

    from common.networks import MultiTaskUNet
    from common.taps import FeatureTaps

    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "features": (4, 4, 8, 8, 16, 4)}
    net = MultiTaskUNet(**kwargs)
    taps = FeatureTaps(net, ["recon_head", "down_4"])
    x = torch.randn(2, 1, 32, 32)
    assert net.train()(x).shape == (2, 3, 32, 32)
    assert taps.features["recon_head"].shape == (2, 1, 32, 32)
    taps.clear()
    net.eval()(x)
    assert "recon_head" not in taps.features and "down_4" in taps.features  # no decoder work at inference
    seg_only = BasicUNet(**kwargs)
    result = seg_only.load_state_dict(net.state_dict(), strict=False)
    assert not result.missing_keys and all(k.startswith("recon_") for k in result.unexpected_keys)
    assert torch.equal(seg_only.eval()(x), net(x))


def test_projection_head_maps_channels_per_position():
    from common.networks import ProjectionHead

    assert ProjectionHead(16, 32, hidden_channels=8)(torch.randn(2, 16, 5, 5)).shape == (2, 32, 5, 5)
    assert len(ProjectionHead(16, 32)) == 1
    assert ProjectionHead(4, 6, spatial_dims=3)(torch.randn(1, 4, 2, 2, 2)).shape == (1, 6, 2, 2, 2)
