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


def test_foreground_slice_dice_ignores_slices_without_ground_truth_foreground():
    from monai.metrics import DiceMetric

    from common.metrics import ForegroundSliceDiceMetric

    label = torch.zeros(1, 2, 4, 4, 3)
    label[:, 1, 1:3, 1:3, 1] = 1  # 4 foreground voxels on slice 1
    pred = label.clone()
    pred[:, 1, 0, 0, 2] = 1  # a false positive on slice 2, which has no foreground
    label[:, 0], pred[:, 0] = 1 - label[:, 1], 1 - pred[:, 1]
    volume, slices = DiceMetric(include_background=False), ForegroundSliceDiceMetric(include_background=False)
    volume(pred, label), slices(pred, label)
    assert volume.aggregate().item() == pytest.approx(2 * 4 / (5 + 4))
    assert slices.aggregate().item() == pytest.approx(1.0)
    along_x = ForegroundSliceDiceMetric(include_background=False, slice_dim=0)
    along_x(pred, label)  # slice x=0 holds no foreground, so the false positive there is ignored too
    assert along_x.aggregate().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one-hot labels"):
        ForegroundSliceDiceMetric()(pred[:, :1], label[:, :1])
