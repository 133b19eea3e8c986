import torch

from common.adapters import ProjectionHead


def test_projection_head_maps_channels_per_position():
    assert ProjectionHead(16, 32, hidden_channels=8)(torch.randn(2, 16, 5, 5)).shape == (2, 32, 5, 5)
    assert len(ProjectionHead(16, 32)) == 1
    assert ProjectionHead(4, 6, spatial_dims=3)(torch.randn(1, 4, 2, 2, 2)).shape == (1, 6, 2, 2, 2)


def test_projection_head_is_a_per_position_linear_map_without_hidden_layer():
    head = ProjectionHead(2, 1)
    with torch.no_grad():
        head[0].weight.copy_(torch.tensor([2.0, -1.0]).view(1, 2, 1, 1))
        head[0].bias.fill_(0.5)
    x = torch.tensor([[3.0, 1.0], [0.0, 4.0]]).view(1, 2, 2, 1)  # channel 0: [3, 1], channel 1: [0, 4]
    assert head(x).flatten().tolist() == [2 * 3 - 0 + 0.5, 2 * 1 - 4 + 0.5]


def test_projection_head_pools_to_a_patch_grid_before_projecting():
    head = ProjectionHead(2, 1, pool_size=2)
    with torch.no_grad():
        head[1].weight.copy_(torch.tensor([1.0, 10.0]).view(1, 2, 1, 1))
        head[1].bias.zero_()
    x = torch.arange(32.0).view(1, 2, 4, 4)  # channel 1 = channel 0 + 16
    pooled = torch.tensor([[2.5, 4.5], [10.5, 12.5]])  # means of the 2x2 patches of channel 0
    torch.testing.assert_close(head(x)[0, 0], pooled + 10 * (pooled + 16))
    assert ProjectionHead(4, 6, 8, spatial_dims=3, pool_size=(1, 2, 2))(torch.randn(2, 4, 4, 4, 4)).shape == (
        2,
        6,
        1,
        2,
        2,
    )
