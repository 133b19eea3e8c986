"""End to end: the MTMS contrastive KD bundle through ``python -m monai.bundle run`` on cardiac-MRI-like
phantoms in the ACDC layout, and on CT phantoms in the MSD Task09 spleen layout (``spleen_ct.json``)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import (
    REPO,
    bundle_run,
    check_monailabel,
    check_vendored_common,
    copy_bundle,
    install_exported,
    logged_terms,
    run,
    run_outside,
    torchrun_bundle,
    verify_bundle,
)

BUNDLE = "mtms_contrastive_cardiac_mri"
pytestmark = pytest.mark.slow
CONTRAST_TERMS = {"contrast_encoder", "contrast_bottleneck", "contrast_decoder"}
KD_TERMS = {"seg", "pmd"} | CONTRAST_TERMS


@pytest.fixture(scope="module")
def cardiac(tmp_path_factory) -> Path:
    """Eight phantom patients (two frames each): the source's 2 validation patients become the test
    list, 2 training patients the validation list (split by patient), 4 patients stay for training."""
    root = tmp_path_factory.mktemp("cardiac")
    run([sys.executable, "tools/make_synthetic_cardiac.py", "--out", str(root), "--patients", "8", "--validation", "2"])
    split = ["--val", "2", "--test", "0", "--test_from", "validation", "--group", r"patient\d+"]
    source = ["--datalist", str(root / "dataset.json"), "--out", str(root / "datalist.json")]
    run([sys.executable, "tools/split_datalist.py", *source, *split])
    return root


def tiny(data: Path) -> list[str]:
    return ["--dataset_dir", str(data), "--epochs", "1", "--num_workers", "0", "--roi_size", "[48,48]"]


@pytest.fixture(scope="module")
def trained(cardiac, tmp_path_factory) -> Path:
    """A copy of the bundle with a one-epoch multi-task teacher and a one-epoch KD student."""
    root = copy_bundle(BUNDLE, tmp_path_factory.mktemp("bundle"))
    teacher = bundle_run(["train.json", "train_teacher.json"], root, *tiny(cardiac))
    (root / "teacher_log.txt").write_text(teacher.stdout + teacher.stderr)
    student = bundle_run(["train.json"], root, *tiny(cardiac))
    (root / "student_log.txt").write_text(student.stdout + student.stderr)
    return root


def test_teacher_learns_segmentation_and_reconstruction_on_every_training_case(trained):
    from common.networks import MultiTaskUNet

    log = (trained / "teacher_log.txt").read_text()
    assert set(logged_terms(log)) == {"seg", "reconstruction"}
    assert "data_fraction 1.0: 4 of 4 cases (8 of 8 items)" in log
    state = torch.load(trained / "models" / "teacher" / "model.pt", weights_only=True)
    assert "recon_head.weight" in state
    MultiTaskUNet(2, 1, 4, features=(32, 32, 64, 128, 256, 32)).load_state_dict(state, strict=True)


def test_student_distils_every_scale_on_half_the_patients_and_exports_a_plain_basic_unet(trained):
    from monai.bundle import ConfigParser

    log = (trained / "student_log.txt").read_text()
    terms = logged_terms(log)
    assert set(terms) == KD_TERMS and terms["pmd"] > 0  # the prediction-map term is not identically zero
    assert "data_fraction 0.5: 2 of 4 cases (4 of 8 items)" in log
    assert "val_mean_dice" in log
    run_dir = trained / "runs" / "mtms_student"
    checkpoint = torch.load(next(run_dir.glob("*epoch=1.pt")), weights_only=True)
    assert {k.split(".")[1] for k in checkpoint["loss"]} == CONTRAST_TERMS  # projection heads, trained and saved
    assert list(run_dir.glob("events.out.tfevents.*"))
    parser = ConfigParser()
    parser.read_config(str(trained / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def")  # stock MONAI BasicUNet, no heads
    state = torch.load(trained / "models" / "model.pt", weights_only=True)
    network.load_state_dict(state, strict=True)
    assert sum(v.numel() for v in state.values()) < 200_000


def test_interrupted_run_resumes_from_the_last_checkpoint(trained, cardiac):
    result = bundle_run(["train.json"], trained, *tiny(cardiac), "--epochs", "2")
    assert "resuming from" in result.stderr + result.stdout
    assert "Epoch: 1/2" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "configs, overrides, terms",
    [
        (["train_baseline.json"], [], {"seg"}),
        (["train_supervised.json"], [], KD_TERMS),
        (
            [],
            ["--distilled_scales", "['bottleneck']", "--run_name", "bottleneck_only"],
            {"seg", "pmd", "contrast_bottleneck"},
        ),
        ([], ["--distilled_scales", "[]", "--run_name", "pmd_only"], {"seg", "pmd"}),
    ],
)
def test_baseline_variant_and_scale_ablations_train_with_exactly_their_terms(
    trained, cardiac, configs, overrides, terms
):
    result = bundle_run(["train.json", *configs], trained, *tiny(cardiac), *overrides)
    assert set(logged_terms(result.stdout + result.stderr)) == terms
    assert "data_fraction 0.5: 2 of 4 cases" in result.stdout + result.stderr  # the same half for every student


def test_default_is_the_code_s_instance_infonce_and_the_overlay_selects_the_supervised_contrast(trained):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(trained / "configs" / f) for f in ("train.json", "train_supervised.json")])
    assert type(parser.get_parsed_content("contrastive_loss")).__name__ == "SupervisedContrastiveLoss"
    parser.read_config(str(trained / "configs" / "train.json"))
    assert type(parser.get_parsed_content("contrastive_loss")).__name__ == "InstanceContrastiveLoss"


def test_evaluation_reports_per_class_dice_per_volume_on_the_original_grid(trained, cardiac):
    bundle_run(["train.json", "evaluate.json"], trained, *tiny(cardiac))
    with open(trained / "runs" / "evaluate_models" / "test_mean_dice_raw.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filename", "class0", "class1", "class2", "mean"] and len(rows) == 5  # 2 patients x 2 frames
    assert all("patient00" in r[0] for r in rows[1:])
    bundle_run(["train.json", "train_teacher.json", "evaluate.json"], trained, *tiny(cardiac))
    assert (trained / "runs" / "evaluate_teacher" / "test_mean_dice_summary.csv").exists()


def test_inference_restacks_slices_to_the_input_geometry(trained, cardiac, tmp_path):
    case = json.loads((cardiac / "datalist.json").read_text())["test"][0]["image"]
    overrides = ["--dataset_dir", str(cardiac), "--image_pattern", case, "--output_dir", str(tmp_path)]
    bundle_run(["inference.json"], trained, *overrides, "--inference_roi_size", "[48,48]")
    pred, src = nib.load(next(tmp_path.glob("*_seg.nii.gz"))), nib.load(cardiac / case)
    assert pred.shape == src.shape == (64, 64, 6)
    assert np.allclose(pred.affine, src.affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2, 3}


def test_verifier_passes(trained, cardiac):
    verify_bundle(trained, cardiac)


def test_multi_gpu_config_runs_with_projection_heads_under_torchrun_on_cpu(trained, cardiac):
    torchrun_bundle(["train.json", "multi_gpu_train.json"], trained, 29521, "--run_name", "ddp", *tiny(cardiac))
    checkpoint = torch.load(next((trained / "runs" / "ddp").glob("*epoch=1.pt")), weights_only=True)
    assert "adapters.contrast_decoder.0.0.weight" in checkpoint["loss"]  # saved unwrapped


def test_msd_task09_spleen_layout_trains_teacher_and_student_with_the_spleen_profile(tmp_path):
    data = tmp_path / "Task09_Spleen"
    make = [sys.executable, "tools/make_synthetic_ct.py", "--out", str(data), "--layout", "msd_spleen"]
    run([*make, "--cases", "6", "--size", "48", "--slices", "6"])
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
    run([sys.executable, "tools/split_datalist.py", *split])
    root = copy_bundle(BUNDLE, tmp_path)
    spleen = ["--dataset_dir", str(data), "--epochs", "1", "--num_workers", "0", "--roi_size", "[48,48]"]
    bundle_run(["train.json", "train_teacher.json", "spleen_ct.json"], root, *spleen)
    result = bundle_run(["train.json", "spleen_ct.json"], root, *spleen, "--inference_roi_size", "[48,48]")
    assert set(logged_terms(result.stdout + result.stderr)) == KD_TERMS
    assert "data_fraction 0.5: 2 of 4 cases" in result.stdout + result.stderr
    assert torch.load(root / "models" / "model.pt", weights_only=True)["final_conv.weight"].shape[0] == 2


def test_bad_input_is_named(trained, cardiac):
    def fails(*overrides: str, configs=("train.json",)) -> str:
        result = bundle_run(
            list(configs), trained, *tiny(cardiac), "--run_name", "bad", *overrides, expect_failure=True
        )
        return result.stderr + result.stdout

    layer = fails("--student_layers#bottleneck", "down_5")
    assert "cannot tap ['down_5']" in layer and "Valid layer names" in layer and "upcat_1" in layer
    unaligned = fails("--teacher_layers#encoder", "down_3", "--instance_contrast#resize", "None")
    assert "InstanceContrastiveLoss: student shape" in unaligned and "set `resize`" in unaligned
    small = fails("--batch_size", "1", "--slices_per_volume", "1")
    assert "no in-batch negatives" in small and "raise the batch size" in small
    assert "data_fraction must be in (0, 1], got 1.5" in fails("--data_fraction", "1.5")
    assert "data_fraction 0.1 of 4 cases keeps none; use at least 0.25" in fails("--data_fraction", "0.1")
    assert "unknown term(s) ['middle']; choose from ['encoder', 'bottleneck', 'decoder']" in fails(
        "--distilled_scales", "['middle']"
    )


def test_exported_bundle_runs_outside_the_repository(cardiac, tmp_path):
    bundle = install_exported(REPO / "bundles" / BUNDLE, tmp_path)  # the shipped bundle, as sent
    check_vendored_common(bundle)
    case = json.loads((cardiac / "datalist.json").read_text())["test"][0]["image"]
    inference = ["--dataset_dir", str(cardiac), "--image_pattern", case, "--output_dir", str(tmp_path / "pred")]
    run_outside(bundle, ["inference.json"], *inference)  # the defaults, as MONAI Label runs it
    assert len(list((tmp_path / "pred").glob("*_seg.nii.gz"))) == 1
    training = json.loads((cardiac / "datalist.json").read_text())["training"]
    cases = [(cardiac / c["image"], cardiac / c["label"]) for c in training]
    prediction = tmp_path / "pred" / Path(case).name.replace(".nii.gz", "_seg.nii.gz")
    check_monailabel(bundle, cardiac / case, prediction, cases, tmp_path)
    run_outside(bundle, ["train.json"], *tiny(cardiac))
    assert list((bundle / "runs" / "mtms_student").glob("checkpoint_epoch=1.pt"))
