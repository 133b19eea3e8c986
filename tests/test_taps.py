import pytest
import torch
from monai.networks.nets import SegResNet

from common.taps import FeatureTaps


def test_taps_record_layer_outputs_by_name_without_changing_forward():
    net = SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8)
    x = torch.randn(1, 1, 16, 16, 16)
    reference = net(x)
    taps = FeatureTaps(net, ["down_layers.3", "conv_final"])
    out = net(x)
    assert torch.equal(out, reference)
    assert taps.features["down_layers.3"].shape == (1, 64, 2, 2, 2)
    assert taps.features["conv_final"].shape == out.shape
    taps.remove()
    net(x)
    assert taps.features == {}


def test_wrong_layer_name_lists_valid_names():
    net = SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8)
    with pytest.raises(ValueError, match=r"cannot tap \['down_layers.9'\].*Valid layer names: \[.*'down_layers.3'"):
        FeatureTaps(net, ["down_layers.9"])
