"""End to end: the HLFD bundle through ``python -m monai.bundle run`` on CT-like phantoms in the KiTS19 layout."""

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

BUNDLE = "hlfd_tumour_ct"
pytestmark = pytest.mark.slow
HLFD_TERMS = {
    "flfd_mid_to_e1",
    "flfd_deep_to_e2",
    "flfd_deep_to_e3",
    "flfd_deep_to_e4",
    "plfd_mid_to_d5",
    "plfd_final_to_d4",
    "plfd_final_to_d3",
    "plfd_final_to_d2",
}
SEG_TERMS = {"seg_dice", "seg_focal"}


@pytest.fixture(scope="module")
def kits(tmp_path_factory) -> Path:
    """Eight 64x64x6 phantoms stored as KiTS19 does (slice axis first), every fourth without tumour,
    with a datalist written by the bundle's data tool."""
    root = tmp_path_factory.mktemp("kits19")
    make = [sys.executable, "tools/make_synthetic_ct.py", "--out", str(root), "--layout", "kits19"]
    run([*make, "--cases", "8", "--size", "64", "--slices", "6", "--no_tumour_every", "4", "--seed", "3"])
    tool = [sys.executable, "tools/tumour_ct_datalist.py", "--layout", "kits19", "--root", str(root)]
    run([*tool, "--out", str(root / "datalist.json"), "--val", "2", "--test", "2"])
    return root


def tiny(data: Path) -> list[str]:
    return [
        "--dataset_dir",
        str(data),
        "--epochs",
        "1",
        "--num_workers",
        "0",
        "--roi_size",
        "[64,64]",
        "--inference_roi_size",
        "[64,64]",
        "--pixdim",
        "[1.5,1.5,-1]",
        "--slices_per_volume",
        "2",
    ]


@pytest.fixture(scope="module")
def trained(kits, tmp_path_factory) -> Path:
    """A copy of the bundle with a one-epoch UNet++ teacher and a one-epoch HLFD student."""
    root = copy_bundle(BUNDLE, tmp_path_factory.mktemp("bundle"))
    bundle_run(["train.json", "train_teacher.json"], root, *tiny(kits))
    result = bundle_run(["train.json"], root, *tiny(kits))
    (root / "hlfd_log.txt").write_text(result.stdout + result.stderr)
    return root


def test_hlfd_student_logs_every_term_keeps_adapters_in_checkpoints_and_exports_a_plain_network(trained, kits):
    from monai.bundle import ConfigParser

    assert (trained / "models" / "teacher" / "model.pt").exists()
    log = (trained / "hlfd_log.txt").read_text()
    assert set(logged_terms(log)) == HLFD_TERMS | SEG_TERMS
    assert "val_mean_dice" in log
    checkpoint = torch.load(next((trained / "runs" / "hlfd_student").glob("*epoch=1.pt")), weights_only=True)
    adapters = {k.split(".")[1] for k in checkpoint["loss"]}
    assert adapters == {"plfd_mid_to_d5", "plfd_final_to_d4", "plfd_final_to_d3", "plfd_final_to_d2"}
    assert list((trained / "runs" / "hlfd_student").glob("events.out.tfevents.*"))
    parser = ConfigParser()
    parser.read_config(str(trained / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def")  # stock MONAI FlexibleUNet, no adapters
    state = torch.load(trained / "models" / "model.pt", weights_only=True)
    network.load_state_dict(state, strict=True)
    assert not any("adapter" in k for k in state)


def test_interrupted_run_resumes_from_the_last_checkpoint(trained, kits):
    result = bundle_run(["train.json"], trained, *tiny(kits), "--epochs", "2")
    assert "resuming from" in result.stderr + result.stdout
    assert "Epoch: 1/2" not in result.stderr + result.stdout
    assert list((trained / "runs" / "hlfd_student").glob("*epoch=2.pt"))


@pytest.mark.parametrize(
    "config, terms",
    [
        ("train_baseline.json", SEG_TERMS),
        ("train_logit_kd.json", SEG_TERMS | {"kd"}),
        ("train_at.json", SEG_TERMS | {"at_deepest"}),
        ("train_flfd.json", SEG_TERMS | {t for t in HLFD_TERMS if t.startswith("flfd")}),
        ("train_plfd.json", SEG_TERMS | {t for t in HLFD_TERMS if t.startswith("plfd")}),
    ],
)
def test_baselines_and_ablations_train_with_exactly_their_terms(trained, kits, config, terms):
    result = bundle_run(["train.json", config], trained, *tiny(kits))
    assert set(logged_terms(result.stdout + result.stderr)) == terms
    name = config.removeprefix("train_").removesuffix(".json")
    assert (trained / "models" / name / "model.pt").exists()


def test_evaluation_reports_whole_volume_and_tumour_slice_dice_per_case(trained, kits):
    bundle_run(["train.json", "evaluate.json"], trained, *tiny(kits))
    out = trained / "runs" / "evaluate_models"
    for metric in ("test_mean_dice", "test_tumour_slice_dice"):
        with open(out / f"{metric}_raw.csv") as f:
            rows = list(csv.reader(f))[1:]
        assert len(rows) == 2 and all(0.0 <= float(r[1]) <= 1.0 for r in rows if r[1] != "nan")
    bundle_run(["train.json", "train_teacher.json", "evaluate.json"], trained, *tiny(kits))
    assert (trained / "runs" / "evaluate_teacher" / "test_mean_dice_raw.csv").exists()


def test_inference_restacks_slices_to_the_input_geometry(trained, kits, tmp_path):
    case = json.loads((kits / "datalist.json").read_text())["test"][0]["image"]
    overrides = ["--dataset_dir", str(kits / Path(case).parent), "--output_dir", str(tmp_path)]
    bundle_run(["inference.json"], trained, *overrides, "--inference_roi_size", "[64,64]", "--pixdim", "[1.5,1.5,-1]")
    pred, src = nib.load(next(tmp_path.glob("*_seg.nii.gz"))), nib.load(kits / case)
    assert pred.shape == src.shape == (6, 64, 64)  # KiTS19 order (z, y, x) kept
    assert np.allclose(pred.affine, src.affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}


def test_verifier_passes(trained, kits):
    verify_bundle(trained, kits)


def test_multi_gpu_config_runs_hlfd_with_adapters_under_torchrun_on_cpu(trained, kits):
    torchrun_bundle(["train.json", "multi_gpu_train.json"], trained, 29519, "--run_name", "ddp", *tiny(kits))
    checkpoint = torch.load(next((trained / "runs" / "ddp").glob("*epoch=1.pt")), weights_only=True)
    assert "adapters.plfd_final_to_d2.0.weight" in checkpoint["loss"]  # saved unwrapped, like single-process runs


def test_bad_input_is_named(trained, kits, tmp_path):
    layer = bundle_run(
        ["train.json"],
        trained,
        *tiny(kits),
        "--student_layers#e1",
        "encoder.stem",
        "--run_name",
        "bad_layer",
        expect_failure=True,
    )
    assert "cannot tap ['encoder.stem']" in layer.stderr and "Valid layer names" in layer.stderr
    assert "encoder.layer1" in layer.stderr
    label = bundle_run(
        ["train.json"], trained, *tiny(kits), "--target_labels", "[7]", "--run_name", "bad_label", expect_failure=True
    )
    assert "holds label value(s) [7]" in label.stderr and "target_labels" in label.stderr
    datalist = json.loads((kits / "datalist.json").read_text())
    for key in ("training", "validation"):  # an MRI-like image: the label map (0..2) where the CT should be
        datalist[key] = [{"image": item["label"], "label": item["label"]} for item in datalist[key]]
    (tmp_path / "not_ct.json").write_text(json.dumps(datalist))
    not_ct = bundle_run(
        ["train.json", "train_baseline.json"],
        trained,
        *tiny(kits),
        "--datalist",
        str(tmp_path / "not_ct.json"),
        "--run_name",
        "not_ct",
    )
    assert "segmentation.nii.gz does not look like CT in Hounsfield units" in not_ct.stderr + not_ct.stdout


def test_the_papers_decoderless_fcn_student_trains_with_the_same_terms(trained, kits, tmp_path):
    configs = ["train.json", "student_fcn.json"]
    result = bundle_run(configs, trained, *tiny(kits), "--run_name", "fcn", "--model_dir", str(tmp_path))
    assert set(logged_terms(result.stdout + result.stderr)) == HLFD_TERMS | SEG_TERMS
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert "classifier.weight" in state and not any(k.startswith("decoder") for k in state)


def test_exported_bundle_runs_outside_the_repository(kits, tmp_path):
    bundle = install_exported(REPO / "bundles" / BUNDLE, tmp_path)  # the shipped bundle, as sent
    check_vendored_common(bundle)
    case = json.loads((kits / "datalist.json").read_text())["test"][0]["image"]
    inference = ["--dataset_dir", str(kits / Path(case).parent), "--output_dir", str(tmp_path / "pred")]
    run_outside(bundle, ["inference.json"], *inference)  # the defaults, as MONAI Label runs it
    assert len(list((tmp_path / "pred").glob("*_seg.nii.gz"))) == 1
    training = json.loads((kits / "datalist.json").read_text())["training"]
    cases = [(kits / c["image"], kits / c["label"]) for c in training]
    check_monailabel(bundle, kits / case, tmp_path / "pred" / "imaging_seg.nii.gz", cases, tmp_path)
    run_outside(bundle, ["train.json"], *tiny(kits))
    assert list((bundle / "runs" / "hlfd_student").glob("checkpoint_epoch=1.pt"))
