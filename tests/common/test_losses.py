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


def test_attention_transfer_matches_hand_computed_value():
    from common.losses import AttentionTransferLoss

    student = torch.tensor([[[[1.0, 0.0]], [[1.0, 0.0]]]])  # (1, 2, 1, 2): A = [1, 0]
    teacher = torch.tensor([[[[0.0, 2.0]]]])  # (1, 1, 1, 2): A = [0, 1]
    assert AttentionTransferLoss(power=4)(student, teacher).item() == pytest.approx(2.0)
    half = torch.tensor([[[[1.0, 1.0]]]])  # A = [1, 1] / sqrt(2)
    expected = (1 - 2**-0.5) ** 2 + (2**-0.5) ** 2
    assert AttentionTransferLoss(power=2)(half, student).item() == pytest.approx(expected, abs=1e-6)


def test_attention_transfer_is_zero_for_the_same_attention_and_ignores_width_and_scale():
    from common.losses import AttentionTransferLoss

    features = torch.randn(3, 1, 5, 5)
    loss = AttentionTransferLoss()
    assert loss(features.repeat(1, 4, 1, 1), 3 * features).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(features, torch.randn(3, 1, 5, 5)).item() > 0
    assert loss.attention(features).norm(dim=1) == pytest.approx(torch.ones(3), abs=1e-6)
    assert AttentionTransferLoss(reduction="none")(features, torch.randn(3, 2, 5, 5)).shape == (3,)


def test_attention_transfer_resizes_the_student_to_the_teacher_grid_or_says_why_not():
    from common.losses import AttentionTransferLoss

    small = torch.rand(2, 3, 2, 2)
    large = torch.nn.functional.interpolate(small, size=(4, 4), mode="nearest")
    assert AttentionTransferLoss(resize="nearest")(small, large).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="set `resize`"):
        AttentionTransferLoss(resize=None)(small, large)
    with pytest.raises(ValueError, match="cannot be resized"):
        AttentionTransferLoss()(torch.rand(2, 3, 4, 4, 4), large)
    with pytest.raises(ValueError, match="batch sizes differ"):
        AttentionTransferLoss()(torch.rand(1, 3, 2, 2), large)
    with pytest.raises(ValueError, match="even integer"):
        AttentionTransferLoss(power=3)


def test_attention_transfer_gradient_reaches_the_student_only():
    from common.losses import AttentionTransferLoss

    student = torch.randn(2, 4, 6, 6, requires_grad=True)
    teacher = torch.randn(2, 8, 3, 3)
    AttentionTransferLoss()(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_logit_and_feature_distillation_resize_the_student_map():
    student = torch.randn(2, 2, 3, 3)
    teacher = torch.randn(2, 2, 6, 6)
    upsampled = torch.nn.functional.interpolate(student, size=(6, 6), mode="bilinear", align_corners=False)
    for loss_type in (LogitDistillationLoss, lambda **kw: FeatureDistillationLoss("kl", 4.0, **kw)):
        resized = loss_type(resize="bilinear")(student, teacher)
        assert resized.item() == pytest.approx(loss_type()(upsampled, teacher).item(), rel=1e-6)
        with pytest.raises(ValueError, match="set `resize`"):
            loss_type()(student, teacher)


def test_concat_resized_combines_layers_on_the_smallest_grid():
    from common.losses import concat_resized

    a, b = torch.rand(2, 2, 8, 8), torch.rand(2, 3, 4, 4)
    combined = concat_resized([a, b])
    assert combined.shape == (2, 5, 4, 4)
    assert torch.equal(combined[:, 2:], b)
    # the larger map is averaged over 2x2 blocks, not sampled
    torch.testing.assert_close(combined[:, :2], a.unfold(2, 2, 2).unfold(3, 2, 2).mean((-1, -2)))
    with pytest.raises(ValueError, match="cannot be combined"):
        concat_resized([a, torch.rand(1, 3, 4, 4)])


def test_composite_combines_grouped_inputs_and_adapts_any_input():
    from common.losses import concat_resized

    student = torch.randn(2, 4, 4, 4, requires_grad=True)
    t1, t2 = torch.randn(2, 2, 8, 8), torch.randn(2, 3, 4, 4)
    teacher_adapter = nn.Conv2d(5, 4, 1)
    loss = DistillationLoss(
        {
            "mid": {
                "loss": FeatureDistillationLoss("mse"),
                "inputs": ["student:s", ["teacher:a", "teacher:b"]],
                "adapters": [None, teacher_adapter],
            }
        }
    )
    assert loss.required_inputs == {"student:s", "teacher:a", "teacher:b"}
    total, _ = loss({"student:s": student, "teacher:a": t1, "teacher:b": t2})
    expected = ((student - teacher_adapter(concat_resized([t1, t2]))) ** 2).mean()
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    assert student.grad.abs().sum() > 0 and teacher_adapter.weight.grad.abs().sum() > 0
    state = loss.state_dict()
    assert set(state) == {"adapters.mid.1.weight", "adapters.mid.1.bias"}


def test_composite_adapter_errors_are_explained():
    feature = FeatureDistillationLoss("mse")
    with pytest.raises(ValueError, match="not both"):
        DistillationLoss({"t": {"loss": feature, "inputs": ["a", "b"], "adapter": nn.Identity(), "adapters": [None]}})
    with pytest.raises(ValueError, match="1 adapters for 2 inputs"):
        DistillationLoss({"t": {"loss": feature, "inputs": ["a", "b"], "adapters": [nn.Identity()]}})
    loss = DistillationLoss({"t": {"loss": feature, "inputs": ["a", "b"], "adapter": nn.Conv2d(3, 2, 1)}})
    with pytest.raises(RuntimeError, match=r"adapter 0 of loss term 't' failed on input 'a' of shape \(1, 4, 2, 2\)"):
        loss({"a": torch.randn(1, 4, 2, 2), "b": torch.randn(1, 2, 2, 2)})
    grouped = DistillationLoss({"t": {"loss": feature, "inputs": ["a", ["b", "c"]]}})
    with pytest.raises(ValueError, match=r"loss term 't', combining \['b', 'c'\]"):
        grouped({"a": torch.randn(1, 2, 2, 2), "b": torch.randn(1, 1, 2, 2), "c": torch.randn(1, 1, 2, 2, 2)})


def test_grid_student_resizes_the_teacher_map_instead():
    from common.losses import AttentionTransferLoss

    student, teacher = torch.randn(2, 2, 3, 3), torch.randn(2, 2, 6, 6)
    downsampled = torch.nn.functional.interpolate(teacher, size=(3, 3), mode="bilinear", align_corners=False)
    for loss_type in (LogitDistillationLoss, AttentionTransferLoss):
        on_student_grid = loss_type(resize="bilinear", grid="student")(student, teacher)
        assert on_student_grid.item() == pytest.approx(loss_type(resize=None)(student, downsampled).item(), rel=1e-6)
    with pytest.raises(ValueError, match="grid must be"):
        FeatureDistillationLoss(grid="both")


def test_instance_infonce_matches_hand_computed_value_and_ignores_scale():
    from common.losses import InstanceContrastiveLoss

    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1)
    loss = InstanceContrastiveLoss(temperature=0.5)
    # positives score 1 / 0.5, negatives 0: L = -log(e^2 / (e^2 + 1)) for both images
    expected = math.log(1 + math.exp(-2.0))
    assert loss(student, student).item() == pytest.approx(expected, rel=1e-6)
    assert loss(student, 3 * student).item() == pytest.approx(expected, rel=1e-6)
    swapped = student.flip(0)  # each image's positive is now the other image's map
    assert loss(student, swapped).item() == pytest.approx(math.log(1 + math.exp(2.0)), rel=1e-6)
    assert loss.__class__(temperature=0.5, reduction="none")(student, student).shape == (2,)


def test_instance_infonce_equals_infonce_of_normalised_maps_in_value_and_gradient():
    import torch.nn.functional as F

    from common.losses import InstanceContrastiveLoss

    torch.manual_seed(0)
    student = (5 * torch.randn(4, 3, 6, 6)).requires_grad_()
    teacher = torch.randn(4, 3, 6, 6)
    InstanceContrastiveLoss(temperature=0.4)(student, teacher).backward()
    reference = student.detach().clone().requires_grad_()
    s, t = F.normalize(reference.flatten(1), dim=1), F.normalize(teacher.flatten(1), dim=1)
    expected = F.cross_entropy(s @ t.T / 0.4, torch.arange(4))
    expected.backward()
    assert InstanceContrastiveLoss(temperature=0.4)(student, teacher).item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(student.grad, reference.grad, atol=1e-7)


def test_instance_infonce_needs_negatives_aligns_grids_and_trains_the_student_only():
    from common.losses import InstanceContrastiveLoss

    with pytest.raises(ValueError, match="no in-batch negatives.*raise the batch size"):
        InstanceContrastiveLoss()(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="student shape .* and teacher shape .* differ"):
        InstanceContrastiveLoss(resize=None)(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="cannot be resized"):
        InstanceContrastiveLoss(resize="bilinear")(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4, 4))
    student = torch.randn(3, 4, 8, 8, requires_grad=True)
    teacher = torch.randn(3, 4, 4, 4, requires_grad=True)
    with torch.no_grad():
        teacher_grid = InstanceContrastiveLoss(grid="teacher", resize="bilinear")(student, teacher)
    assert torch.isfinite(teacher_grid)
    InstanceContrastiveLoss(resize="bilinear")(student, teacher.detach()).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_dense_infonce_matches_hand_computed_values_across_positions_and_images():
    from common.losses import DenseContrastiveLoss, InstanceContrastiveLoss

    maps = torch.eye(2).view(1, 2, 1, 2)  # one image, two positions: [1, 0] and [0, 1]
    loss = DenseContrastiveLoss(temperature=0.5)
    # each position: its positive scores 1 / 0.5, the other position 0: L = log(1 + e^-2)
    assert loss(maps, 3 * maps).item() == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-6)
    swapped = maps.flip(3)  # the teacher's positions exchanged: each positive is the wrong structure
    assert loss(maps, swapped).item() == pytest.approx(math.log(1 + math.exp(2.0)), rel=1e-6)
    # positions of other images are negatives too: on 1x1 maps the loss is the instance loss
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 4, 1, 1), torch.randn(3, 4, 1, 1)
    assert loss(student, teacher).item() == pytest.approx(InstanceContrastiveLoss(0.5)(student, teacher).item())
    # two images of two positions; rows image-major, unit vectors, so scores are plain dot products
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, -0.6]])
    scores = s @ t.T / 0.5
    expected = scores.logsumexp(1) - scores.diag()

    def as_maps(rows: torch.Tensor) -> torch.Tensor:  # (image, position, channel) -> (B, C, 1, W)
        return rows.view(2, 2, 2).transpose(1, 2).unsqueeze(2)

    per_anchor = DenseContrastiveLoss(temperature=0.5, reduction="none")(as_maps(s), as_maps(t))
    torch.testing.assert_close(per_anchor, expected)


def test_dense_infonce_draws_positions_needs_negatives_and_trains_the_student_only():
    from common.losses import DenseContrastiveLoss

    student = torch.randn(2, 4, 8, 8, requires_grad=True)
    teacher = torch.randn(2, 4, 16, 16)
    drawn = DenseContrastiveLoss(num_positions=10, resize="area", reduction="none")(student, teacher)
    assert drawn.shape == (10,) and torch.isfinite(drawn).all()
    everything = DenseContrastiveLoss(resize="area", reduction="none")(student, teacher)
    assert everything.shape == (2 * 8 * 8,)
    DenseContrastiveLoss(resize="area")(student, teacher).backward()
    assert student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="1 position has no negatives"):
        DenseContrastiveLoss()(torch.randn(1, 4, 1, 1), torch.randn(1, 4, 1, 1))
    with pytest.raises(ValueError, match="num_positions must be None or >= 2"):
        DenseContrastiveLoss(num_positions=1)
    with pytest.raises(ValueError, match="student shape .* and teacher shape .* differ"):
        DenseContrastiveLoss()(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4))


def test_supervised_contrast_matches_hand_computed_value():
    from common.losses import SupervisedContrastiveLoss

    # two images, each one pixel of class 0 with feature [1, 0] and one of class 1 with [0, 1]
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2).repeat(2, 1, 1, 1)
    labels = torch.tensor([0, 1]).view(1, 1, 1, 2).repeat(2, 1, 1, 1)
    loss = SupervisedContrastiveLoss(num_classes=2, temperature=0.5)
    # each anchor: 2 positives at 1/0.5, 2 negatives at 0: L = log(2 e^2 + 2) - 2
    expected = math.log(2 * math.exp(2.0) + 2) - 2.0
    assert loss(features, features, labels).item() == pytest.approx(expected, rel=1e-6)
    per_anchor = SupervisedContrastiveLoss(num_classes=2, temperature=0.5, reduction="none")(features, features, labels)
    assert per_anchor.shape == (4,)
    foreground_only = SupervisedContrastiveLoss(num_classes=2, include_background=False)(features, features, labels)
    assert foreground_only.item() == 0.0  # one class left: nothing to contrast
    wrong_class = features.flip(1)  # the teacher's class-0 region now looks like class 1
    assert loss(features, wrong_class, labels).item() > expected


def test_supervised_contrast_pools_regions_on_each_grid_and_trains_the_student_only():
    from common.losses import SupervisedContrastiveLoss

    torch.manual_seed(0)
    labels = torch.randint(0, 3, (4, 1, 16, 16))
    student = torch.randn(4, 8, 16, 16, requires_grad=True)
    teacher = torch.randn(4, 8, 4, 4, requires_grad=True)  # a coarser grid: the labels are pooled onto it
    loss = SupervisedContrastiveLoss(num_classes=3)
    loss(student, teacher.detach(), labels).backward()
    assert student.grad.abs().sum() > 0
    one_class = SupervisedContrastiveLoss(num_classes=3)(student, teacher, torch.zeros_like(labels))
    assert one_class.item() == 0.0 and one_class.requires_grad  # kept in the graph for DDP
    with pytest.raises(ValueError, match="share batch size and width"):
        loss(student, torch.randn(4, 6, 4, 4), labels)
    with pytest.raises(ValueError, match="label values 0..5 exceed num_classes"):
        loss(student, teacher, labels.clamp(max=2) + (labels == 2) * 3)
    with pytest.raises(ValueError, match=r"labels of shape \(B, 1, \*spatial\)"):
        loss(student, teacher, labels[:, 0])
    with pytest.raises(ValueError, match="no in-batch negatives"):
        loss(student[:1], teacher[:1], labels[:1])
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        SupervisedContrastiveLoss(num_classes=1)


def test_select_terms_keeps_the_named_scales_and_lists_valid_ones():
    from common.losses import select_terms

    terms = {"contrast_encoder": {"w": 1}, "contrast_decoder": {"w": 2}}
    assert select_terms(terms, ["decoder"], prefix="contrast_") == {"contrast_decoder": {"w": 2}}
    assert select_terms(terms, [], prefix="contrast_") == {}
    with pytest.raises(ValueError, match=r"unknown term\(s\) \['middle'\]; choose from \['encoder', 'decoder'\]"):
        select_terms(terms, ["middle"], prefix="contrast_")


def _contrastive_losses() -> dict:
    """Each contrastive loss, called as the configs call it (only the supervised one reads labels)."""
    from common.losses import DenseContrastiveLoss, InstanceContrastiveLoss, SupervisedContrastiveLoss

    instance, dense = InstanceContrastiveLoss(0.5), DenseContrastiveLoss(0.5)
    return {
        "instance": lambda student, teacher, labels: instance(student, teacher),
        "supervised": SupervisedContrastiveLoss(3, 0.5),
        "dense": lambda student, teacher, labels: dense(student, teacher),
    }


def _contrastive_worker(rank: int, world_size: int, folder: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    data = torch.load(f"{folder}/batch.pt", weights_only=True)
    part = slice(rank * 2, rank * 2 + 2)  # this process's half of the batch
    results = {}
    for name, loss in _contrastive_losses().items():
        student = data["student"][part].clone().requires_grad_()
        teacher = data["teacher"][part].clone().requires_grad_()  # e.g. a learnable head on the teacher side
        value = loss(student, teacher, data["labels"][part])
        value.backward()
        results[name] = {"loss": value.detach(), "student": student.grad, "teacher": teacher.grad}
    torch.save(results, f"{folder}/rank_{rank}.pt")
    dist.destroy_process_group()


def test_contrastive_losses_gather_negatives_across_processes(tmp_path):
    """Two processes holding half a batch each give the one-process loss on the whole batch (the
    mean of their losses) and, once DDP averages them, its gradients: negatives come from every
    process, and gradients reach each process's own teacher maps."""
    torch.manual_seed(0)
    labels = torch.zeros(4, 1, 8, 8, dtype=torch.long)
    labels[:, :, :4] = 1
    labels[:, :, 6:, :3] = 2  # every image holds the three classes: as many anchors on each process
    data = {"student": torch.randn(4, 6, 8, 8), "teacher": torch.randn(4, 6, 8, 8), "labels": labels}
    torch.save(data, tmp_path / "batch.pt")
    torch.multiprocessing.spawn(_contrastive_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank_{r}.pt", weights_only=True) for r in (0, 1)]
    for name, loss in _contrastive_losses().items():
        student, teacher = data["student"].clone().requires_grad_(), data["teacher"].clone().requires_grad_()
        whole = loss(student, teacher, labels)
        whole.backward()
        halves = [r[name] for r in ranks]
        local = loss(data["student"][:2], data["teacher"][:2], labels[:2])  # without gathering: other negatives
        assert not torch.isclose(local, halves[0]["loss"], atol=1e-4), name
        torch.testing.assert_close((halves[0]["loss"] + halves[1]["loss"]) / 2, whole.detach(), msg=name)
        for side, grad in (("student", student.grad), ("teacher", teacher.grad)):
            gathered = torch.cat([halves[0][side], halves[1][side]]) / 2  # DDP's average over 2 processes
            torch.testing.assert_close(gathered, grad, msg=f"{name} {side}")


@pytest.mark.parametrize("module", ["logit", "feature", "attention", "contrastive"])
def test_the_docstring_examples_give_what_they_show(module):
    import doctest
    import importlib

    results = doctest.testmod(importlib.import_module(f"common.losses.{module}"), extraglobs={"torch": torch})
    assert results.attempted > 0 and results.failed == 0


def test_terms_reading_the_label_see_the_labelled_samples_only():
    student, teacher = torch.randn(4, 2, 3, requires_grad=True), torch.randn(4, 2, 3)
    label = torch.rand(4, 2, 3)  # soft labels, so that an MSE can stand for the segmentation loss
    seg = FeatureDistillationLoss("mse")
    loss = DistillationLoss(
        {
            "seg": {"loss": seg, "inputs": ["student", "label"], "weight": 2.0},
            "kd": {"loss": LogitDistillationLoss(1.0), "inputs": ["student", "teacher"]},
        }
    )
    mask = torch.tensor([1, 0, 1, 0])
    _, terms = loss({"student": student, "teacher": teacher, "label": label, "labelled": mask})
    assert terms["seg"].item() == pytest.approx(2.0 * ((student[[0, 2]] - label[[0, 2]]) ** 2).mean().item())
    assert terms["kd"].item() == pytest.approx(LogitDistillationLoss(1.0)(student, teacher).item())  # every sample
    terms["seg"].backward()
    assert student.grad[[1, 3]].abs().sum() == 0 and student.grad[[0, 2]].abs().sum() > 0
    none = torch.zeros(4)
    total, terms = loss({"student": student, "teacher": teacher, "label": label, "labelled": none})
    assert terms["seg"].item() == 0.0 and terms["seg"].requires_grad  # kept in the graph (DDP sees every input)
    assert total.item() == pytest.approx(terms["kd"].item())


def test_standardized_feature_matching_compares_shapes_not_scales():
    s = torch.tensor([[[[1.0, 3.0]]]])  # (1, 1, 1, 2): z-scores -1, 1
    t = torch.tensor([[[[10.0, 50.0]]]])  # another scale, the same shape: z-scores -1, 1
    loss = FeatureDistillationLoss("mse", normalize="standardize")
    assert loss(s, t).item() == pytest.approx(0.0, abs=1e-6)
    flipped = torch.tensor([[[[50.0, 10.0]]]])  # z-scores 1, -1: squared differences 4, 4
    assert loss(s, flipped).item() == pytest.approx(4.0, rel=1e-4)
    assert FeatureDistillationLoss("mse")(s, t).item() == pytest.approx((81 + 47**2) / 2)
    with pytest.raises(ValueError, match="normalize must be one of"):
        FeatureDistillationLoss("mse", normalize="l2")
