import math

import pytest
import torch
from ignite.engine import Events
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


def kd_loss(
    layer: str = "down_layers.3", adapter: torch.nn.Module | None = None, extra_terms: dict | None = None
) -> DistillationLoss:
    return DistillationLoss(
        (extra_terms or {})
        | {
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


def test_taps_record_training_iterations_only_and_leave_no_hook_behind():
    student, teacher = net(1), freeze(net(2))
    trainer = make_trainer(student, teacher, kd_loss())
    seen = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine):  # what a ValidationHandler does: the student's forward outside the iteration
        with torch.no_grad():
            student(torch.randn(1, 1, 16, 16, 16))
        seen.append((dict(trainer.student_taps.features), hooks(student), hooks(teacher)))

    trainer.run()
    assert seen == [({}, 0, 0)]
    assert hooks(student) == hooks(teacher) == 0


def test_term_gradients_are_measured_on_the_chosen_iterations_only():
    student, teacher = net(1), freeze(net(2))
    trainer = make_trainer(student, teacher, kd_loss(), diagnostics_interval=2)
    seen = {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        seen[engine.state.iteration] = {k for k in loss_terms(engine.state.output) if k.startswith("grad_")}

    trainer.run()
    assert trainer.reference_term == "seg"  # the first term reading the label
    expected = {"grad_norm_seg", "grad_norm_kd", "grad_norm_latent", "grad_cos_kd", "grad_cos_latent"}
    assert seen == {1: set(), 2: expected, 3: set()}
    with pytest.raises(ValueError, match="reference_term 'dice' is not a loss term"):
        make_trainer(net(1), freeze(net(2)), kd_loss(), diagnostics_interval=1, reference_term="dice")
    with pytest.raises(ValueError, match="diagnostics_interval must be >= 0"):
        make_trainer(net(1), freeze(net(2)), kd_loss(), diagnostics_interval=-1)


def test_measuring_the_gradients_leaves_the_update_unchanged():
    weights = []
    for interval in (0, 1):
        torch.manual_seed(0)
        student, teacher = net(1), freeze(net(2))
        make_trainer(student, teacher, kd_loss(), diagnostics_interval=interval).run()
        weights.append(student.state_dict())
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, msg=key)


def test_measure_reports_every_term_and_each_networks_agreement_with_the_label_updating_nothing():
    torch.manual_seed(0)
    student, teacher = net(1), freeze(net(2))
    trainer = make_trainer(student, teacher, kd_loss())
    before = {k: v.clone() for k, v in student.state_dict().items()}
    batch = make_batches(1)[0]
    measured = trainer.measure(batch)
    for key, value in student.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.grad is None for p in student.parameters())
    with torch.no_grad():
        expected_kd = LogitDistillationLoss(4.0)(student(batch["image"]), teacher(batch["teacher_image"]))
        teacher_wrong = (teacher(batch["teacher_image"]).argmax(1) != batch["label"][:, 0]).float().mean()
    assert measured["loss_kd"] == pytest.approx(float(expected_kd), rel=1e-5)
    assert measured["teacher_disagreement"] == pytest.approx(float(teacher_wrong))
    assert {"grad_norm_seg", "grad_cos_kd", "grad_cos_latent", "student_dice", "teacher_margin"} <= set(measured)


def test_unlabelled_samples_feed_the_distillation_terms_but_not_the_segmentation_term():
    torch.manual_seed(0)
    student, teacher = net(1), freeze(net(2))
    trainer = make_trainer(student, teacher, kd_loss())
    batch = make_batches(1)[0] | {"labelled": torch.tensor([1, 0])}
    measured = trainer.measure(batch)
    with torch.no_grad():
        logits = student(batch["image"])
        seg = DiceCELoss(to_onehot_y=True, softmax=True)(logits[:1], batch["label"][:1])
        kd = LogitDistillationLoss(4.0)(logits, teacher(batch["teacher_image"]))  # both samples
        agreement = (logits[:1].argmax(1) != batch["label"][:1, 0]).float().mean()
    assert measured["loss_seg"] == pytest.approx(float(seg), rel=1e-5)
    assert measured["loss_kd"] == pytest.approx(float(kd), rel=1e-5)
    assert measured["student_disagreement"] == pytest.approx(float(agreement))
    unlabelled = make_batches(1)[0] | {"labelled": torch.tensor([0, 0])}
    trainer.data_loader = [batch, batch, unlabelled]  # the epoch's three iterations
    trainer.run()  # the last batch, without any label, trains on the distillation terms alone
    assert trainer.state.output["loss_seg"] == 0.0 and trainer.state.output["loss_kd"] > 0


def hooks(network: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in network.modules())


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


def _distributed_worker(rank: int, world_size: int, folder: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    torch.manual_seed(rank)  # different initial adapters and data on each rank
    student, teacher = net(1), freeze(net(2))
    adapter = torch.nn.Conv3d(64, 64, 1)
    torch.save({k: v.clone() for k, v in adapter.state_dict().items()}, f"{folder}/initial_{rank}.pt")
    loss = kd_loss(adapter=adapter)
    trainer = make_trainer(torch.nn.parallel.DistributedDataParallel(student), teacher, loss)
    scale = 1.0 + rank  # each rank sees other images
    trainer.data_loader = [
        {**b, "image": b["image"] * scale, "teacher_image": b["teacher_image"] * scale} for b in make_batches()
    ]
    trainer.run()
    torch.save({"adapter": adapter.state_dict(), "student": student.state_dict()}, f"{folder}/rank_{rank}.pt")
    dist.destroy_process_group()


def test_learnable_adapters_stay_identical_across_ranks(tmp_path):
    """Under torch.distributed the loss's adapters are synchronised like the DDP student: started
    from rank 0's values and updated with averaged gradients, although every rank sees other data."""
    torch.multiprocessing.spawn(_distributed_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank_{r}.pt", weights_only=True) for r in (0, 1)]
    initial = [torch.load(tmp_path / f"initial_{r}.pt", weights_only=True) for r in (0, 1)]
    assert not torch.equal(initial[0]["weight"], initial[1]["weight"])
    for part in ("adapter", "student"):
        for key, value in ranks[0][part].items():
            assert torch.allclose(value, ranks[1][part][key], atol=1e-6), f"{part} {key} differs between ranks"
    assert not torch.allclose(ranks[0]["adapter"]["weight"], initial[0]["weight"])


def _equivalence_loss() -> DistillationLoss:
    from common.losses import InstanceContrastiveLoss

    contrast = {"loss": InstanceContrastiveLoss(0.5), "inputs": ["student:down_layers.3", "teacher:down_layers.3"]}
    return kd_loss(adapter=torch.nn.Conv3d(64, 64, 1), extra_terms={"contrast": contrast})


def _half_batch_worker(rank: int, world_size: int, folder: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    student, teacher, loss = net(1), freeze(net(2)), _equivalence_loss()
    trainer = make_trainer(torch.nn.parallel.DistributedDataParallel(student), teacher, loss)
    trainer.data_loader = [{k: v[rank : rank + 1] for k, v in b.items()} for b in make_batches()]  # half of each
    trainer.run()
    if rank == 0:
        torch.save({"student": student.state_dict(), "loss": loss.state_dict()}, f"{folder}/distributed.pt")
    dist.destroy_process_group()


def test_two_processes_on_half_batches_train_as_one_process_on_whole_batches(tmp_path):
    """The same global batch split over two processes (DDP student, synchronised adapters,
    contrastive negatives gathered from both) gives the weights one process gets."""
    torch.manual_seed(0)
    student, teacher, loss = net(1), freeze(net(2)), _equivalence_loss()
    make_trainer(student, teacher, loss).run()
    torch.multiprocessing.spawn(_half_batch_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    distributed = torch.load(tmp_path / "distributed.pt", weights_only=True)
    for part, state in (("student", student.state_dict()), ("loss", loss.state_dict())):
        assert state.keys() == distributed[part].keys()
        for key, value in state.items():
            torch.testing.assert_close(distributed[part][key], value, atol=2e-5, rtol=1e-4, msg=f"{part} {key}")
