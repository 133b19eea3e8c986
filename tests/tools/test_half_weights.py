"""``tools.bundle.half_weights``: float16 storage of a state dict that loads into the float32 network."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SegResNet

from tools.bundle import half_weights


def small_network() -> SegResNet:
    torch.manual_seed(0)
    return SegResNet(spatial_dims=2, in_channels=1, out_channels=2, init_filters=8, norm="batch")


def test_half_storage_halves_the_file_and_loads_into_the_float32_network(tmp_path, capsys):
    network = small_network().eval()
    src, dst = tmp_path / "model.pt", tmp_path / "model_fp16.pt"
    torch.save(network.state_dict(), src)
    half_weights.main([str(src), str(dst)])
    out = capsys.readouterr().out
    assert "MB in float16; largest rounding error" in out
    assert float(out.split("largest rounding error ")[1].split()[0]) <= 2**-11
    assert dst.stat().st_size < 0.55 * src.stat().st_size
    stored = torch.load(dst, weights_only=True)
    assert {v.dtype for k, v in stored.items() if "num_batches_tracked" not in k} == {torch.float16}
    assert all(v.dtype == torch.int64 for k, v in stored.items() if "num_batches_tracked" in k)

    reloaded = small_network().eval()
    reloaded.load_state_dict(stored)  # what MONAI's CheckpointLoader does: values copied into float32 parameters
    assert {p.dtype for p in reloaded.parameters()} == {torch.float32}
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected, got = network(x), reloaded(x)
    assert not torch.equal(expected, got)  # the weights were rounded
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-2 * float(expected.abs().max()))
    assert (got.argmax(1) != expected.argmax(1)).float().mean() < 0.01


def test_in_place_replacement(tmp_path):
    src = tmp_path / "model.pt"
    torch.save(small_network().state_dict(), src)
    before = src.stat().st_size
    half_weights.main([str(src)])
    assert src.stat().st_size < 0.55 * before and not list(tmp_path.glob(".*.partial"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (torch.tensor([1.0, 7e4]), r"weight: largest magnitude 7e\+04 is beyond float16"),
        (torch.full((10,), 1e-9), r"weight: 100.00% of its nonzero values round to zero in float16"),
    ],
)
def test_values_float16_cannot_hold_are_refused_and_the_file_kept(tmp_path, value, message):
    src = tmp_path / "model.pt"
    torch.save({"weight": value}, src)
    before = src.read_bytes()
    with pytest.raises(ValueError, match=message):
        half_weights.to_half(torch.load(src, weights_only=True))
    with pytest.raises(SystemExit):
        half_weights.main([str(src)])
    assert src.read_bytes() == before
