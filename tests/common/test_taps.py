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
