import pytest
import torch
from monai.data import MetaTensor

from common.metrics import PhysicalHausdorffDistanceMetric


def cube(offset: int) -> torch.Tensor:
    """One-hot (2, 20, 20, 20) of a 5-voxel cube shifted by ``offset`` voxels along the last axis."""
    fg = torch.zeros(20, 20, 20)
    fg[5:10, 5:10, 5 + offset : 10 + offset] = 1
    return torch.stack([1 - fg, fg])


def test_hausdorff_is_in_millimetres_from_the_label_affine():
    label = MetaTensor(cube(2), affine=torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0])))
    metric = PhysicalHausdorffDistanceMetric(percentile=95)
    metric([cube(0)], [label])
    assert metric.aggregate().item() == pytest.approx(4.0)  # 2 voxels of 2 mm


def test_plain_tensors_and_explicit_spacing_keep_monai_behaviour():
    metric = PhysicalHausdorffDistanceMetric(percentile=95)
    metric(cube(0)[None], cube(2)[None])
    assert metric.aggregate().item() == pytest.approx(2.0)
    metric = PhysicalHausdorffDistanceMetric(percentile=95)
    label = MetaTensor(cube(2)[None], affine=torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0])))
    metric(cube(0)[None], label, spacing=[1.0, 1.0, 3.0])
    assert metric.aggregate().item() == pytest.approx(6.0)
