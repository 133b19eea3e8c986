import math

import pytest
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import SegResNet
from monai.utils import CommonKeys as Keys

from common.engines import DistillationTrainer, loss_terms
from common.losses import DistillationLoss, FeatureDistillationLoss, LogitDistillationLoss
from common.teachers import freeze


def make_batches(n: int = 3) -> list[dict]:
    torch.manual_seed(0)
    batches = []
    for _ in range(n):
        image = torch.randn(2, 2, 16, 16, 16)
        label = (image[:, :1] > 0.5).float()
        batches.append({"image": image[:, 1:], "teacher_image": image, "label": label})
    return batches


def net(in_channels: int) -> SegResNet:
    return SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=2, init_filters=8)


def kd_loss(layer: str = "down_layers.3", adapter: torch.nn.Module | None = None) -> DistillationLoss:
    return DistillationLoss(
        {
            "seg": {"loss": DiceCELoss(to_onehot_y=True, softmax=True), "inputs": ["student", "label"]},
            "kd": {"loss": LogitDistillationLoss(4.0), "inputs": ["student", "teacher"]},
            "latent": {
                "loss": FeatureDistillationLoss("kl"),
                "inputs": [f"student:{layer}", f"teacher:{layer}"],
                "weight": 0.1,
                "adapter": adapter,
            },
        }
    )


def make_trainer(student, teacher, loss, device: str = "cpu", **kwargs) -> DistillationTrainer:
    optimizer = torch.optim.SGD(list(student.parameters()) + list(loss.parameters()), lr=0.1)
    return DistillationTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=make_batches(),
        network=student,
        optimizer=optimizer,
        loss_function=loss,
        teachers=teacher,
        teacher_input_key="teacher_image",
        decollate=False,
        **kwargs,
    )


def test_student_learns_teacher_stays_frozen_and_terms_are_reported():
    torch.manual_seed(0)
    student, teacher = net(1), freeze(net(2))
    adapter = torch.nn.Conv3d(64, 64, 1)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    adapter_before = adapter.weight.clone()
    trainer = make_trainer(student, teacher, kd_loss(adapter=adapter))
    trainer.run()
    out = trainer.state.output
    assert out[Keys.PRED].shape == (2, 2, 16, 16, 16)  # PRED is the student's output
    terms = loss_terms(out)
    assert set(terms) == {"loss", "loss_seg", "loss_kd", "loss_latent"}
    assert terms["loss"] == pytest.approx(terms["loss_seg"] + terms["loss_kd"] + terms["loss_latent"], rel=1e-5)
    assert terms["loss_kd"] > 0 and terms["loss_latent"] > 0
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), f"teacher weight {k} changed"
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training
    assert any(not torch.equal(v, student_before[k]) for k, v in student.state_dict().items())
    assert not torch.equal(adapter.weight, adapter_before)  # adapters are optimised with the student
    assert trainer.student_taps.features == {}  # features are dropped after each iteration


def test_no_teacher_is_plain_supervised_training():
    loss = DistillationLoss(
        {"seg": {"loss": DiceCELoss(to_onehot_y=True, softmax=True), "inputs": ["student", "label"]}}
    )
    trainer = make_trainer(net(1), {}, loss)
    trainer.run()
    assert set(loss_terms(trainer.state.output)) == {"loss", "loss_seg"}


def test_wrong_tapped_layer_lists_valid_names():
    with pytest.raises(ValueError, match=r"cannot tap \['encoder.9'\].*Valid layer names"):
        make_trainer(net(1), net(2), kd_loss(layer="encoder.9"))


def test_unknown_loss_input_source_is_rejected():
    loss = DistillationLoss({"kd": {"loss": LogitDistillationLoss(), "inputs": ["student", "mentor"]}})
    with pytest.raises(ValueError, match="'mentor' names no known source"):
        make_trainer(net(1), net(2), loss)


def test_teacher_given_the_wrong_channel_count_names_itself():
    trainer = make_trainer(net(1), net(3), kd_loss())
    with pytest.raises(
        RuntimeError, match=r"teacher 'teacher' failed on batch key 'teacher_image' of shape \(2, 2, 16"
    ):
        trainer.run()


def test_teacher_and_student_feature_shape_mismatch_is_explained():
    student = SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=16)
    trainer = make_trainer(student, net(2), kd_loss())
    with pytest.raises(ValueError, match="student shape .* and teacher shape .* differ.*adapter"):
        trainer.run()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_amp_branch_runs_teacher_and_terms():
    """The AMP branch (autocast + GradScaler) end to end: mixed precision on CUDA; on a CPU-only
    machine the same branch runs with autocast and the scaler disabled by torch."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    student, teacher, loss = net(1).to(device), freeze(net(2).to(device)), kd_loss().to(device)
    trainer = make_trainer(student, teacher, loss, device=device, amp=True)
    trainer.run()
    assert trainer.amp and trainer.scaler is not None  # the scaler branch of SupervisedTrainer ran
    terms = loss_terms(trainer.state.output)
    assert all(math.isfinite(v) for v in terms.values()) and terms["loss_kd"] > 0
