import math

import pytest
import torch
from torch import nn

from common.losses import DistillationLoss, FeatureDistillationLoss, LogitDistillationLoss


def logits_for(probs: list[float]) -> torch.Tensor:
    """(1, C, 1) logits whose softmax is ``probs``."""
    return torch.tensor(probs).log().view(1, -1, 1)


def test_softmax_kd_matches_hand_computed_value():
    teacher, student = logits_for([0.75, 0.25]), logits_for([0.5, 0.5])
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.130812
    loss = LogitDistillationLoss(temperature=1.0)(student, teacher)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_softmax_kd_temperature_softens_and_rescales_by_t_squared():
    teacher, student = torch.tensor([[[2.0], [0.0]]]), torch.tensor([[[0.0], [0.0]]])
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)  # teacher at T=2
    expected = 4 * (p * (p / 0.5).log()).sum().item()
    assert LogitDistillationLoss(temperature=2.0)(student, teacher).item() == pytest.approx(expected, abs=1e-6)


def test_kd_is_zero_for_identical_inputs_and_positive_otherwise():
    x = torch.randn(2, 3, 4, 4, 4)
    for activation in ("softmax", "sigmoid"):
        loss = LogitDistillationLoss(temperature=4.0, activation=activation)
        assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
        assert loss(x, torch.randn_like(x)).item() > 0


def test_sigmoid_kd_matches_binary_kl():
    teacher, student = torch.tensor([[[0.0]]]), torch.tensor([[[math.log(3.0)]]])  # p=0.5, q=0.75
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert LogitDistillationLoss(1.0, "sigmoid")(student, teacher).item() == pytest.approx(expected, abs=1e-6)


def test_reductions_and_shapes():
    s, t = torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)
    none = LogitDistillationLoss(reduction="none")(s, t)
    assert none.shape == (2, 1, 5, 6)
    assert LogitDistillationLoss(reduction="sum")(s, t).item() == pytest.approx(none.sum().item(), rel=1e-5)
    assert LogitDistillationLoss(reduction="mean")(s, t).item() == pytest.approx(none.mean().item(), rel=1e-5)
    assert LogitDistillationLoss(activation="sigmoid", reduction="none")(s, t).shape == (2, 3, 5, 6)
    assert FeatureDistillationLoss("mse", reduction="none")(s, t).shape == (2, 3, 5, 6)


def test_bad_arguments_are_rejected_with_clear_messages():
    with pytest.raises(ValueError, match="temperature"):
        LogitDistillationLoss(temperature=0)
    with pytest.raises(ValueError, match="activation"):
        LogitDistillationLoss(activation="tanh")
    with pytest.raises(ValueError, match="sigmoid"):
        LogitDistillationLoss()(torch.randn(1, 1, 4), torch.randn(1, 1, 4))
    with pytest.raises(ValueError, match=r"student shape \(1, 2, 4\) and teacher shape \(1, 3, 4\)"):
        LogitDistillationLoss()(torch.randn(1, 2, 4), torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match="mode"):
        FeatureDistillationLoss(mode="l1")


def test_feature_losses_hand_computed():
    s = torch.tensor([[[1.0], [2.0]]])
    t = torch.tensor([[[3.0], [2.0]]])
    assert FeatureDistillationLoss("mse")(s, t).item() == pytest.approx((4 + 0) / 2)
    p, q = torch.softmax(t.view(-1), 0), torch.softmax(s.view(-1), 0)
    expected = (p * (p / q).log()).sum().item()
    assert FeatureDistillationLoss("kl")(s, t).item() == pytest.approx(expected, abs=1e-6)


def test_composite_sums_weighted_named_terms_and_reports_them():
    s, t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    loss = DistillationLoss(
        {
            "kd": {"loss": LogitDistillationLoss(1.0), "inputs": ["student", "teacher"], "weight": 0.5},
            "mse": {"loss": FeatureDistillationLoss("mse"), "inputs": ["student", "teacher"], "weight": 2.0},
        }
    )
    total, terms = loss({"student": s, "teacher": t})
    assert set(terms) == {"kd", "mse"}
    assert terms["kd"].item() == pytest.approx(0.5 * LogitDistillationLoss(1.0)(s, t).item(), rel=1e-5)
    assert terms["mse"].item() == pytest.approx(2.0 * ((s - t) ** 2).mean().item(), rel=1e-5)
    assert total.item() == pytest.approx(terms["kd"].item() + terms["mse"].item(), rel=1e-6)


def test_composite_errors_name_the_term_and_inputs():
    loss = DistillationLoss({"kd": {"loss": LogitDistillationLoss(), "inputs": ["student", "teacher"]}})
    with pytest.raises(KeyError, match=r"'kd' needs \['teacher'\]; available inputs: \['student'\]"):
        loss({"student": torch.randn(1, 2, 3)})
    with pytest.raises(ValueError, match="'inputs'"):
        DistillationLoss({"kd": {"loss": LogitDistillationLoss()}})
    with pytest.raises(ValueError, match="list of input names"):
        DistillationLoss({"kd": {"loss": LogitDistillationLoss(), "inputs": "student"}})


def test_adapter_is_trained_with_student_and_teacher_gets_no_gradient():
    student_feat = torch.randn(2, 4, 3, 3, requires_grad=True)
    teacher_feat = torch.randn(2, 8, 3, 3, requires_grad=True)
    adapter = nn.Conv2d(4, 8, 1)
    loss = DistillationLoss(
        {"feat": {"loss": FeatureDistillationLoss("mse"), "inputs": ["student:x", "teacher:x"], "adapter": adapter}}
    )
    assert {id(p) for p in loss.parameters()} == {id(p) for p in adapter.parameters()}
    assert loss.required_inputs == {"student:x", "teacher:x"}
    total, _ = loss({"student:x": student_feat, "teacher:x": teacher_feat.detach()})
    total.backward()
    assert student_feat.grad is not None and student_feat.grad.abs().sum() > 0
    assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0
    assert teacher_feat.grad is None


def test_masked_dice_ce_equals_monai_dice_ce_without_ignored_voxels():
    from monai.losses import DiceCELoss

    from common.losses import MaskedDiceCELoss

    logits, labels = torch.randn(2, 3, 6, 5, 4), torch.randint(0, 3, (2, 1, 6, 5, 4)).float()
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, labels)
    assert MaskedDiceCELoss()(logits, labels).item() == pytest.approx(expected.item(), abs=1e-6)


def test_masked_dice_ce_matches_hand_computed_value_and_ignores_masked_voxels():
    from common.losses import MaskedDiceCELoss

    logits = torch.tensor([[[[0.0, 2.0, 5.0]], [[0.0, 0.0, -5.0]]]])  # (1, 2, 1, 3)
    labels = torch.tensor([[[[1.0, 0.0, 255.0]]]])
    p = torch.softmax(logits[0, :, 0, :2], dim=0)  # the two kept voxels
    ce = -(p[1, 0].log() + p[0, 1].log()) / 2
    onehot = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # class x voxel
    dice = 1 - (2 * (p * onehot).sum(1) + 1e-5) / (p.sum(1) + onehot.sum(1) + 1e-5)
    loss = MaskedDiceCELoss(ignore_index=255)
    assert loss(logits, labels).item() == pytest.approx((dice.mean() + ce).item(), abs=1e-5)
    changed = logits.clone()
    changed[..., 2] = torch.tensor([-9.0, 9.0]).view(2, 1)
    assert loss(changed, labels).item() == pytest.approx(loss(logits, labels).item(), abs=1e-6)


def test_masked_dice_ce_gradients_reach_only_kept_voxels_and_bad_labels_are_named():
    from common.losses import MaskedDiceCELoss

    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    labels = torch.randint(0, 2, (1, 1, 4, 4)).float()
    labels[..., :2, :] = 255
    MaskedDiceCELoss()(logits, labels).backward()
    assert logits.grad[..., :2, :].abs().sum() == 0 and logits.grad[..., 2:, :].abs().sum() > 0
    with pytest.raises(ValueError, match="label value 2 does not fit a 2-class head"):
        MaskedDiceCELoss()(torch.randn(1, 2, 4, 4), torch.full((1, 1, 4, 4), 2.0))
    with pytest.raises(ValueError, match="is a class index"):
        MaskedDiceCELoss(ignore_index=1)(torch.randn(1, 2, 4, 4), labels)
    all_ignored = torch.full((1, 1, 4, 4), 255.0)
    assert torch.isfinite(MaskedDiceCELoss()(torch.randn(1, 2, 4, 4), all_ignored))
