"""What only the HLFD bundle has: its ablation and baseline overlays, the paper's decoder-less
student, CT input checks, and its networks, metric and transform (``scripts/``)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from monai.networks.nets import BasicUNetPlusPlus

from tests.bundles.profiles import HLFD_TERMS
from tests.helpers import BUNDLES, bundle_module, logged_terms, per_case, run_bundle, run_fails
from tools.bundle.isolation import bundle_scripts

NAME = "hlfd_tumour_ct"
pytestmark = pytest.mark.xdist_group(NAME)  # the worker that trains this bundle for the contract tests
SEG_TERMS = {"seg_dice", "seg_focal"}
networks = bundle_module(BUNDLES / NAME, "networks")
metrics = bundle_module(BUNDLES / NAME, "metrics")
transforms = bundle_module(BUNDLES / NAME, "transforms")
UNetPlusPlus, ResNetFCN = networks.UNetPlusPlus, networks.ResNetFCN


@pytest.mark.parametrize(
    "config, terms",
    [
        ("train_logit_kd.json", SEG_TERMS | {"kd"}),
        ("train_at.json", SEG_TERMS | {"at_deepest"}),
        ("train_flfd.json", SEG_TERMS | {t for t in HLFD_TERMS if t.startswith("flfd")}),
        ("train_plfd.json", SEG_TERMS | {t for t in HLFD_TERMS if t.startswith("plfd")}),
    ],
)
def test_baselines_and_ablations_train_with_exactly_their_terms(trained, config, terms):
    bundle = trained(NAME)
    log = run_bundle(bundle.root, ["train.json", config], **bundle.profile.overrides(bundle.data))
    assert set(logged_terms(log)) == terms
    name = config.removeprefix("train_").removesuffix(".json")
    assert (bundle.root / "models" / name / "model.pt").exists()


def test_the_default_student_is_the_papers_fcn_and_flexibleunet_the_second_one(trained, tmp_path):
    bundle = trained(NAME)
    default = torch.load(bundle.root / "models" / "model.pt", weights_only=True)
    assert "classifier.weight" in default and not any(k.startswith("decoder") for k in default)
    overrides = bundle.profile.overrides(bundle.data, run_name="flexibleunet", model_dir=str(tmp_path))
    log = run_bundle(bundle.root, ["train.json", "student_flexibleunet.json"], **overrides)
    assert set(logged_terms(log)) == HLFD_TERMS | SEG_TERMS
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert any(k.startswith("decoder.blocks.3") for k in state) and "classifier.weight" not in state


def test_kd_warmup_scales_every_distillation_term_but_not_segmentation(trained, tmp_path):
    bundle = trained(NAME)
    logs = {}
    for warmup in (0, 4):  # same seed, same first batch: at epoch 1 of a 4-epoch ramp, a quarter
        overrides = {
            "run_name": f"warmup{warmup}",
            "model_dir": str(tmp_path / str(warmup)),
            "kd_warmup_epochs": warmup,
        }
        logs[warmup] = logged_terms(
            run_bundle(bundle.root, ["train.json"], **bundle.profile.overrides(bundle.data, **overrides))
        )
    assert set(logs[4]) == HLFD_TERMS | SEG_TERMS
    for name, value in logs[0].items():
        expected = value if name in SEG_TERMS else value / 4
        assert logs[4][name] == pytest.approx(expected, rel=1e-3, abs=1e-4), name


def test_the_p_adapter_is_on_the_student_side_and_sized_from_the_networks():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLES / NAME / "configs" / "train.json"))
    with bundle_scripts(BUNDLES / NAME):
        loss = parser.get_parsed_content("loss_def")
    student_side, teacher_side = loss.adapters["plfd_mid_to_d5"]
    assert isinstance(teacher_side, torch.nn.Identity)  # nothing learnable between the teacher and the loss
    # UNet++ row-0 nodes X(0,1..3) have features[0] channels each: 3 x 32 here, read from the network
    assert (student_side.in_channels, student_side.out_channels) == (256, 3 * parser["teacher_features"][0])


def test_the_teacher_is_evaluated_like_the_students(trained):
    bundle = trained(NAME)
    run_bundle(
        bundle.root, ["train.json", "train_teacher.json", "evaluate.json"], **bundle.profile.overrides(bundle.data)
    )
    out = bundle.root / "runs" / "evaluate_teacher"
    assert (out / "test_tumour_slice_dice_raw.csv").exists()
    for measure in ("sensitivity", "precision"):  # the diagnostics' per-case measures, NaN where undefined
        values = per_case(out / f"test_{measure}_raw.csv")
        assert len(values) == bundle.profile.test_cases, measure
        assert all(math.isnan(v) or 0 <= v <= 1 for v in values), (measure, values)


def test_bad_input_is_named(trained, tmp_path):
    bundle = trained(NAME)
    layer = run_fails(
        bundle.root,
        ["train.json"],
        **bundle.profile.overrides(bundle.data, **{"student_layers#e1": "encoder.stem", "run_name": "bad_layer"}),
    )
    assert "cannot tap ['encoder.stem']" in layer and "Valid layer names" in layer and "encoder.layer1" in layer
    label = run_fails(
        bundle.root, ["train.json"], **bundle.profile.overrides(bundle.data, target_labels=[7], run_name="bad_label")
    )
    assert "holds label value(s) [7]" in label and "target_labels" in label
    datalist = json.loads((bundle.data / "datalist.json").read_text())
    for key in ("training", "validation"):  # an MRI-like image: the label map (0..2) where the CT should be
        datalist[key] = [{"image": item["label"], "label": item["label"]} for item in datalist[key]]
    (tmp_path / "not_ct.json").write_text(json.dumps(datalist))
    overrides = bundle.profile.overrides(bundle.data, datalist=str(tmp_path / "not_ct.json"), run_name="not_ct")
    log = run_bundle(bundle.root, ["train.json", "train_baseline.json"], **overrides)
    assert "segmentation.nii.gz does not look like CT in Hounsfield units" in log


def test_unet_plus_plus_returns_a_tensor_with_monai_weights_and_names():
    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": (4, 4, 8, 8, 16, 4)}
    torch.manual_seed(0)
    ours = UNetPlusPlus(**kwargs).eval()
    monai_net = BasicUNetPlusPlus(**kwargs).eval()
    monai_net.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(ours(x), monai_net(x)[0])
    assert {"conv_1_0", "upcat_1_1", "upcat_0_3"} <= {name for name, _ in ours.named_modules()}
    with pytest.raises(ValueError, match="deep supervision"):
        UNetPlusPlus(**kwargs, deep_supervision=True)


def test_resnet_fcn_upsamples_logits_to_the_input_and_checks_its_size():
    net = ResNetFCN("resnet10", spatial_dims=2, in_channels=1, out_channels=3)
    assert net(torch.randn(2, 1, 64, 96)).shape == (2, 3, 64, 96)
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.randn(1, 1, 48, 64))


def test_resnet_fcn_exports_to_torchscript_by_scripting_and_tracing_with_eager_outputs():
    net = ResNetFCN("resnet18", spatial_dims=2, in_channels=1, out_channels=2).eval()
    modules = dict(net.named_modules())  # projection shortcuts (torchvision's), not MedicalNet's zero padding
    assert isinstance(modules["encoder.layer2.0.downsample.0"], torch.nn.Conv2d)
    scripted, traced = torch.jit.script(net), torch.jit.trace(net, torch.randn(1, 1, 64, 64))
    x = torch.randn(2, 1, 96, 128)  # another size than the trace's
    with torch.no_grad():
        expected = net(x)
        assert torch.allclose(scripted(x), expected, atol=1e-5) and torch.allclose(traced(x), expected, atol=1e-5)
    with pytest.raises(torch.jit.Error, match="divisible by 32"):
        scripted(torch.randn(1, 1, 48, 64))


def test_foreground_slice_dice_ignores_slices_without_ground_truth_foreground():
    from monai.metrics import DiceMetric

    ForegroundSliceDiceMetric = metrics.ForegroundSliceDiceMetric
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


def test_case_confusion_metric_keeps_one_value_per_case_and_nan_where_undefined():
    CaseConfusionMetric = metrics.CaseConfusionMetric
    label = torch.zeros(3, 2, 4, 4)
    label[:2, 1, 0, :] = 1  # cases 0 and 1: 4 tumour voxels each; case 2: none
    pred = torch.zeros_like(label)
    pred[0, 1, 0, :2] = 1  # case 0: finds 2 of 4 and marks 2 voxels outside
    pred[0, 1, 3, :2] = 1
    pred[1, 1, 0, :] = 1  # case 1: exactly the tumour; case 2: nothing marked
    label[:, 0], pred[:, 0] = 1 - label[:, 1], 1 - pred[:, 1]
    sensitivity, precision = CaseConfusionMetric("sensitivity"), CaseConfusionMetric("precision")
    sensitivity(pred, label), precision(pred, label)
    found, marked = sensitivity.get_buffer(), precision.get_buffer()
    assert found.shape == (3, 1) and marked.shape == (3, 1)
    assert found[:2, 0].tolist() == [0.5, 1.0] and marked[:2, 0].tolist() == [0.5, 1.0]
    assert found[2].isnan().all() and marked[2].isnan().all()  # no tumour, nothing marked: undefined
    assert sensitivity.aggregate().item() == pytest.approx(0.75)  # the NaN case is left out
    with_background = CaseConfusionMetric("sensitivity", include_background=True)
    with_background(pred, label)
    assert with_background.get_buffer()[0].tolist() == pytest.approx([10 / 12, 0.5])
    with pytest.raises(ValueError, match="'recal' is not a confusion-matrix measure.*'sensitivity'"):
        CaseConfusionMetric("recal")


def test_hu_window_on_an_image_that_is_not_ct_warns_once_and_names_it(caplog):
    from monai.data import MetaTensor

    check = transforms.WarnIfNotCTd("image", hu_window=(-200, 300))
    mri = MetaTensor(torch.rand(1, 4, 4, 2) * 255, meta={"filename_or_obj": "/data/heart_mri.nii.gz"})
    ct = MetaTensor(torch.full((1, 4, 4, 2), -1000.0), meta={"filename_or_obj": "/data/ct.nii.gz"})
    with caplog.at_level("WARNING"):
        out = check({"image": mri})
        check({"image": mri})
        check({"image": ct})
    assert out["image"] is mri
    assert caplog.text.count("heart_mri.nii.gz does not look like CT in Hounsfield units") == 1
    assert "(-200.0, 300.0) will clip it" in caplog.text
    assert "/data/ct.nii.gz does not look" not in caplog.text
