import pytest
import torch
from monai.networks.nets import SegResNet

from common.taps import FeatureTaps


def net() -> SegResNet:
    return SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8)


def hooks(network: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in network.modules())


def test_taps_record_layer_outputs_by_name_without_changing_forward():
    network, x = net(), torch.randn(1, 1, 16, 16, 16)
    reference = network(x)
    with FeatureTaps(network, ["down_layers.3", "conv_final"]) as taps:
        out = network(x)
        assert torch.equal(out, reference)
        assert taps.features["down_layers.3"].shape == (1, 64, 2, 2, 2)
        assert taps.features["conv_final"].shape == out.shape


def test_taps_record_nothing_outside_their_block_and_hold_nothing_after_it():
    network, x = net(), torch.randn(1, 1, 16, 16, 16)
    taps = FeatureTaps(network, ["down_layers.3"])
    network(x)  # e.g. a validation forward: not recorded
    assert taps.features == {} and hooks(network) == 0
    with taps:
        assert hooks(network) == 1
        network(x)
        assert "down_layers.3" in taps.features
    assert taps.features == {} and hooks(network) == 0
    network(x)
    assert taps.features == {}
    with taps, pytest.raises(RuntimeError, match="already open"), taps:
        pass


def test_wrong_layer_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"cannot tap \['down_layers.9'\].*Valid layer names: \[.*'down_layers.3'"):
        FeatureTaps(net(), ["down_layers.9"])


def test_tapped_channels_reads_widths_from_the_network_and_leaves_it_as_it_was():
    from monai.networks.nets import BasicUNet, BasicUNetPlusPlus

    from common.taps import tapped_channels

    net = BasicUNetPlusPlus(2, 1, 2, features=(4, 6, 8, 10, 12, 5)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # UNet++ row-0 nodes have features[0] channels, not features[5]: the widths a config must not assume
    layers = {"mid": ["upcat_0_1", "upcat_0_2", "upcat_0_3"], "e5": "conv_4_0", "final": "upcat_0_4"}
    assert tapped_channels(net, layers, [1, 1, 32, 32]) == {"mid": 12, "e5": 12, "final": 5}
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="cannot tap"):
        tapped_channels(BasicUNet(2, 1, 2), {"x": "down_9"}, [1, 1, 32, 32])
