"""What only the network-agnostic transfer bundle has: several teachers annotating transferal
images, fine-tuning, soft targets, and its loss and metric (``scripts/``). The annotate stage
itself is tested in ``test_transfer_annotate.py``."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from tests.bundles.profiles import ANNOTATE
from tests.helpers import BUNDLES, bundle_module, run_bundle, run_fails

NAME = "agnostic_transfer_la_mri"
pytestmark = pytest.mark.xdist_group(NAME)  # the worker that trains this bundle for the contract tests
losses = bundle_module(BUNDLES / NAME, "losses")
metrics = bundle_module(BUNDLES / NAME, "metrics")


def test_each_teacher_is_saved_under_models_teacher(trained):
    bundle = trained(NAME)
    for name in ("unet", "segresnet"):
        assert (bundle.root / "models" / "teacher" / name / "model.pt").exists()
        assert list((bundle.root / "runs" / f"teacher_{name}").glob("events.out.tfevents.*"))


def test_pseudo_labels_have_the_transferal_geometry_and_a_rerun_skips_them(trained):
    bundle = trained(NAME)
    pseudo = bundle.root / "runs" / "pseudo_labels"
    entries = json.loads((pseudo / "datalist.json").read_text())["training"]
    assert len(entries) == 2
    for entry in entries:
        label, image = nib.load(pseudo / entry["label"]), nib.load(entry["image"])
        assert label.shape == image.shape and np.allclose(label.affine, image.affine)
        assert nib.load(pseudo / entry["probabilities"]).shape == (*image.shape, 2)
    manifest = json.loads((pseudo / "manifest.json").read_text())
    assert set(manifest["settings"]["teachers"]) == {"unet", "segresnet"}
    log = run_bundle(bundle.root, ["train.json", "annotate.json"], **bundle.profile.overrides(bundle.data, **ANNOTATE))
    assert "0 case(s) annotated, 2 already done" in log


def test_finetuning_starts_from_the_distilled_student(trained):
    bundle = trained(NAME)
    student = torch.load(bundle.root / "models" / "model.pt", weights_only=True)
    run_bundle(bundle.root, ["train.json", "finetune.json"], **bundle.profile.overrides(bundle.data))
    tuned = torch.load(bundle.root / "models" / "finetuned" / "model.pt", weights_only=True)
    assert student.keys() == tuned.keys() and any(not torch.equal(student[k], tuned[k]) for k in student)


def test_mixed_finetuning_mixes_pseudo_labelled_and_labelled_cases_and_stops_early(trained, tmp_path):
    bundle = trained(NAME)
    frozen = {"epochs": 6, "early_stop_patience": 1, "learning_rate": 0.0, "model_dir": str(tmp_path)}
    overrides = bundle.profile.overrides(bundle.data, **frozen)
    log = run_bundle(bundle.root, ["train.json", "finetune_mixed.json"], **overrides)
    # at learning rate 0 the validation Dice never improves on epoch 1: patience 1 stops after epoch 2
    assert "Epoch[2] Complete" in log and "Epoch[3]" not in log
    assert (tmp_path / "model.pt").exists()
    parser = ConfigParser()
    parser.read_config([str(bundle.root / "configs" / f) for f in ("train.json", "finetune_mixed.json")])
    parser.update(overrides | {"bundle_root": str(bundle.root)})
    items = parser.get_parsed_content("train#dataset#data")
    pseudo = [i for i in items if i["label"].startswith(str(bundle.root / "runs" / "pseudo_labels"))]
    labelled = [i for i in items if i not in pseudo]
    assert len(pseudo) == 2 and len(labelled) == 2 * 1  # 1 labelled case repeated to match the 2 pseudo-labelled


def test_the_student_is_five_times_smaller_than_either_teacher(trained, tmp_path):
    bundle = trained(NAME)
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / NAME / "configs" / "train.json"))
    size = sum(p.numel() for p in parser.get_parsed_content("network_def").parameters())
    for teacher in ("unet", "segresnet"):
        teacher_size = sum(
            p.numel() for p in parser.get_parsed_content(f"teacher_nets#{teacher}#network_def").parameters()
        )
        assert 5 * size <= teacher_size, teacher
    inference = ConfigParser()
    inference.read_config(str(BUNDLES / NAME / "configs" / "inference.json"))
    state = torch.load(bundle.root / "models" / "model.pt", weights_only=True)
    inference.get_parsed_content("network_def").load_state_dict(state)  # inference builds the trained network
    run_bundle(
        bundle.root,
        ["train.json", "student_basicunet.json"],
        **bundle.profile.overrides(bundle.data, model_dir=str(tmp_path), run_name="basicunet_student"),
    )
    larger = torch.load(tmp_path / "model.pt", weights_only=True)
    assert sum(v.numel() for v in larger.values()) > 9 * size  # the 0.3.x student (1.42 M parameters)


def test_soft_targets_train(trained):
    bundle = trained(NAME)
    run_bundle(bundle.root, ["train.json", "train_soft.json"], **bundle.profile.overrides(bundle.data))
    assert (bundle.root / "models" / "soft" / "model.pt").exists()


def test_bad_input_is_named(trained):
    bundle = trained(NAME)
    other = str(bundle.root / "runs" / "other")
    empty = run_fails(
        bundle.root,
        ["train.json", "annotate.json"],
        **bundle.profile.overrides(bundle.data, transferal_key="empty", pseudo_label_dir=other),
    )
    assert "the transferal set is empty" in empty
    wrong = run_fails(
        bundle.root,
        ["train.json", "annotate.json"],
        **bundle.profile.overrides(bundle.data, num_classes=3, pseudo_label_dir=other),
    )
    assert "teacher 'unet' failed to load" in wrong and "shape mismatches" in wrong
    mismatch = run_fails(
        bundle.root, ["train.json"], **bundle.profile.overrides(bundle.data, num_classes=1, run_name="mismatch")
    )
    assert "holds values [1] outside the 1 classes" in mismatch


def test_masked_dice_ce_equals_monai_dice_ce_without_ignored_voxels():
    from monai.losses import DiceCELoss

    logits, labels = torch.randn(2, 3, 6, 5, 4), torch.randint(0, 3, (2, 1, 6, 5, 4)).float()
    expected = DiceCELoss(to_onehot_y=True, softmax=True)(logits, labels)
    assert losses.MaskedDiceCELoss()(logits, labels).item() == pytest.approx(expected.item(), abs=1e-6)


def test_masked_dice_ce_matches_hand_computed_value_and_ignores_masked_voxels():
    logits = torch.tensor([[[[0.0, 2.0, 5.0]], [[0.0, 0.0, -5.0]]]])  # (1, 2, 1, 3)
    labels = torch.tensor([[[[1.0, 0.0, 255.0]]]])
    p = torch.softmax(logits[0, :, 0, :2], dim=0)  # the two kept voxels
    ce = -(p[1, 0].log() + p[0, 1].log()) / 2
    onehot = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # class x voxel
    dice = 1 - (2 * (p * onehot).sum(1) + 1e-5) / (p.sum(1) + onehot.sum(1) + 1e-5)
    loss = losses.MaskedDiceCELoss(ignore_index=255)
    assert loss(logits, labels).item() == pytest.approx((dice.mean() + ce).item(), abs=1e-5)
    changed = logits.clone()
    changed[..., 2] = torch.tensor([-9.0, 9.0]).view(2, 1)
    assert loss(changed, labels).item() == pytest.approx(loss(logits, labels).item(), abs=1e-6)


def test_masked_dice_ce_gradients_reach_only_kept_voxels_and_bad_labels_are_named():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    labels = torch.randint(0, 2, (1, 1, 4, 4)).float()
    labels[..., :2, :] = 255
    losses.MaskedDiceCELoss()(logits, labels).backward()
    assert logits.grad[..., :2, :].abs().sum() == 0 and logits.grad[..., 2:, :].abs().sum() > 0
    with pytest.raises(ValueError, match="label value 2 does not fit a 2-class head"):
        losses.MaskedDiceCELoss()(torch.randn(1, 2, 4, 4), torch.full((1, 1, 4, 4), 2.0))
    with pytest.raises(ValueError, match="is a class index"):
        losses.MaskedDiceCELoss(ignore_index=1)(torch.randn(1, 2, 4, 4), labels)
    all_ignored = torch.full((1, 1, 4, 4), 255.0)
    assert torch.isfinite(losses.MaskedDiceCELoss()(torch.randn(1, 2, 4, 4), all_ignored))


def cube(offset: int) -> torch.Tensor:
    """One-hot (2, 20, 20, 20) of a 5-voxel cube shifted by ``offset`` voxels along the last axis."""
    fg = torch.zeros(20, 20, 20)
    fg[5:10, 5:10, 5 + offset : 10 + offset] = 1
    return torch.stack([1 - fg, fg])


def test_hausdorff_is_in_millimetres_from_the_label_affine():
    label = MetaTensor(cube(2), affine=torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0])))
    metric = metrics.PhysicalHausdorffDistanceMetric(percentile=95)
    metric([cube(0)], [label])
    assert metric.aggregate().item() == pytest.approx(4.0)  # 2 voxels of 2 mm


def test_plain_tensors_and_explicit_spacing_keep_monai_behaviour():
    metric = metrics.PhysicalHausdorffDistanceMetric(percentile=95)
    metric(cube(0)[None], cube(2)[None])
    assert metric.aggregate().item() == pytest.approx(2.0)
    metric = metrics.PhysicalHausdorffDistanceMetric(percentile=95)
    label = MetaTensor(cube(2)[None], affine=torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0])))
    metric(cube(0)[None], label, spacing=[1.0, 1.0, 3.0])
    assert metric.aggregate().item() == pytest.approx(6.0)
