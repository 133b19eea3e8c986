"""What only the MTMS bundle has: a multi-task teacher (segmentation and reconstruction), students on
a seeded half of the patients, contrastive terms per scale with their ablations, the MSD Task09
spleen profile, and its network (``scripts/networks.py``)."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser

from common.taps import FeatureTaps
from tests.bundles.profiles import MTMS_CONTRAST
from tests.helpers import BUNDLES, bundle_module, copy_bundle, logged_terms, run_bundle, run_fails
from tools.data import split_datalist, synthetic_ct

NAME = "mtms_contrastive_cardiac_mri"
pytestmark = pytest.mark.xdist_group(NAME)  # the worker that trains this bundle for the contract tests
KD_TERMS = {"seg", "pmd"} | MTMS_CONTRAST
networks = bundle_module(BUNDLES / NAME, "networks")


def test_the_teacher_learns_segmentation_and_reconstruction_on_every_training_case(trained):
    bundle = trained(NAME)
    log = bundle.teacher_logs[0]
    assert set(logged_terms(log)) == {"seg", "reconstruction"}
    assert "data_fraction 1.0: 4 of 4 cases (8 of 8 items)" in log
    state = torch.load(bundle.root / "models" / "teacher" / "model.pt", weights_only=True)
    assert "recon_head.weight" in state
    networks.MultiTaskUNet(2, 1, 4, features=(32, 32, 64, 128, 256, 32)).load_state_dict(state, strict=True)


def test_the_student_learns_on_half_the_patients_and_stays_small(trained):
    bundle = trained(NAME)
    assert "data_fraction 0.5: 2 of 4 cases (4 of 8 items)" in bundle.student_log
    state = torch.load(bundle.root / "models" / "model.pt", weights_only=True)
    assert sum(v.numel() for v in state.values()) < 200_000
    assert logged_terms(bundle.student_log)["pmd"] > 0  # the prediction-map term is not identically zero


@pytest.mark.parametrize(
    "configs, overrides, terms",
    [
        (["train_supervised.json"], {}, KD_TERMS),
        (["train_dense.json"], {}, KD_TERMS),
        (["train_feature_mse.json"], {}, KD_TERMS),
        (
            [],
            {"distilled_scales": ["bottleneck"], "run_name": "bottleneck_only"},
            {"seg", "pmd", "contrast_bottleneck"},
        ),
        (["train_pmd.json"], {}, {"seg", "pmd"}),
    ],
)
def test_variant_and_scale_ablations_train_with_exactly_their_terms(trained, configs, overrides, terms):
    bundle = trained(NAME)
    log = run_bundle(bundle.root, ["train.json", *configs], **bundle.profile.overrides(bundle.data, **overrides))
    assert set(logged_terms(log)) == terms
    assert "data_fraction 0.5: 2 of 4 cases" in log  # the same half for every student


def test_unlabelled_kd_distils_on_every_patient_with_labels_on_half_of_them(trained):
    bundle = trained(NAME)
    configs = ["train.json", "train_dense.json", "train_unlabelled_kd.json"]
    log = run_bundle(bundle.root, configs, **bundle.profile.overrides(bundle.data, run_name="unlabelled_kd"))
    assert "data_fraction 1.0: 4 of 4 cases (8 of 8 items)" in log
    assert "label_fraction 0.5: 2 of 4 cases" in log
    assert set(logged_terms(log)) == KD_TERMS


@pytest.mark.parametrize(
    "overlay, loss, pooled, reads_labels",
    [
        ("train_paper.json", "InstanceContrastiveLoss", False, False),
        ("train_supervised.json", "SupervisedContrastiveLoss", False, True),
        ("train_dense.json", "DenseContrastiveLoss", True, False),
        ("train_feature_mse.json", "FeatureDistillationLoss", True, False),
    ],
)
def test_each_overlay_selects_its_term_through_the_same_projection_heads(overlay, loss, pooled, reads_labels):
    parser = ConfigParser()
    configs = BUNDLES / NAME / "configs"
    parser.read_config([str(configs / f) for f in ("train.json", overlay)])
    terms = parser.get_parsed_content("distilled_terms")
    assert set(terms) == MTMS_CONTRAST
    for scale, term in terms.items():
        assert type(term["loss"]).__name__ == loss
        assert ("label" in term["inputs"]) == reads_labels
        pools = isinstance(term["adapter"][0], torch.nn.AdaptiveAvgPool2d)
        assert pools == (pooled and scale != "contrast_bottleneck")  # the 6x6 bottleneck is coarse already


def test_msd_task09_spleen_layout_trains_teacher_and_student_with_the_spleen_profile(tmp_path):
    data = tmp_path / "Task09_Spleen"
    synthetic_ct.main(["--out", str(data), "--layout", "msd_spleen", "--cases", "6", "--size", "48", "--slices", "6"])
    split = [
        "--datalist",
        str(data / "dataset.json"),
        "--out",
        str(data / "datalist.json"),
        "--val",
        "2",
        "--test",
        "0",
    ]
    split_datalist.main(split)
    root = copy_bundle(NAME, tmp_path)
    spleen = {
        "dataset_dir": str(data),
        "epochs": 1,
        "num_workers": 0,
        "roi_size": [48, 48],
        "inference_roi_size": [48, 48],
    }
    run_bundle(root, ["train.json", "train_teacher.json", "spleen_ct.json"], **spleen)
    log = run_bundle(root, ["train.json", "spleen_ct.json"], **spleen)
    assert set(logged_terms(log)) == KD_TERMS
    assert "data_fraction 0.5: 2 of 4 cases" in log
    assert torch.load(root / "models" / "model.pt", weights_only=True)["final_conv.weight"].shape[0] == 2


def test_bad_input_is_named(trained):
    bundle = trained(NAME)

    def fails(**overrides: object) -> str:
        return run_fails(
            bundle.root, ["train.json"], **bundle.profile.overrides(bundle.data, run_name="bad", **overrides)
        )

    layer = fails(**{"student_layers#bottleneck": "down_5"})
    assert "cannot tap ['down_5']" in layer and "Valid layer names" in layer and "upcat_1" in layer
    unaligned = fails(**{"teacher_layers#encoder": "down_3", "instance_contrast#resize": None})
    assert "InstanceContrastiveLoss: student shape" in unaligned and "set `resize`" in unaligned
    small = fails(batch_size=1, slices_per_volume=1)
    assert "no in-batch negatives" in small and "raise the batch size" in small
    assert "data_fraction must be in (0, 1], got 1.5" in fails(data_fraction=1.5)
    assert "data_fraction 0.1 of 4 cases keeps none; use at least 0.25" in fails(data_fraction=0.1)
    unknown = fails(distilled_scales=["middle"])
    assert "unknown term(s) ['middle']; choose from ['encoder', 'bottleneck', 'decoder']" in unknown


def test_multi_task_unet_segments_reconstructs_for_taps_in_training_and_keeps_basic_unet_names():
    from monai.networks.nets import BasicUNet

    MultiTaskUNet = networks.MultiTaskUNet
    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "features": (4, 4, 8, 8, 16, 4)}
    net = MultiTaskUNet(**kwargs)
    x = torch.randn(2, 1, 32, 32)
    with FeatureTaps(net, ["recon_head", "down_4"]) as taps:
        assert net.train()(x).shape == (2, 3, 32, 32)
        assert taps.features["recon_head"].shape == (2, 1, 32, 32)
    with FeatureTaps(net, ["recon_head", "down_4"]) as taps:
        net.eval()(x)
        assert "recon_head" not in taps.features and "down_4" in taps.features  # no decoder work at inference
    seg_only = BasicUNet(**kwargs)
    result = seg_only.load_state_dict(net.state_dict(), strict=False)
    assert not result.missing_keys and all(k.startswith("recon_") for k in result.unexpected_keys)
    assert torch.equal(seg_only.eval()(x), net(x))
