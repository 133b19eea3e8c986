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
        (
            [],
            {"distilled_scales": ["bottleneck"], "run_name": "bottleneck_only"},
            {"seg", "pmd", "contrast_bottleneck"},
        ),
        ([], {"distilled_scales": [], "run_name": "pmd_only"}, {"seg", "pmd"}),
    ],
)
def test_variant_and_scale_ablations_train_with_exactly_their_terms(trained, configs, overrides, terms):
    bundle = trained(NAME)
    log = run_bundle(bundle.root, ["train.json", *configs], **bundle.profile.overrides(bundle.data, **overrides))
    assert set(logged_terms(log)) == terms
    assert "data_fraction 0.5: 2 of 4 cases" in log  # the same half for every student


def test_default_is_the_code_s_instance_infonce_and_the_overlay_selects_the_supervised_contrast():
    parser = ConfigParser()
    configs = BUNDLES / NAME / "configs"
    parser.read_config([str(configs / f) for f in ("train.json", "train_supervised.json")])
    assert parser["contrastive_loss"] == "@supervised_contrast"
    parser.read_config(str(configs / "train.json"))
    assert parser["contrastive_loss"] == "@instance_contrast"
    assert parser["instance_contrast"]["_target_"] == "common.losses.InstanceContrastiveLoss"


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
