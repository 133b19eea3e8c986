"""End to end: every stage of the network-agnostic transfer bundle through ``python -m monai.bundle run``."""

from __future__ import annotations

import csv
import json
import os
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
    run_outside,
    torchrun_bundle,
    verify_bundle,
)

BUNDLE = "agnostic_transfer_la_mri"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(phantoms, tmp_path_factory) -> Path:
    """Single-channel phantoms (the first modality) split as the bundle expects: teacher training,
    transferal (labels unused), fine-tuning, validation and test lists, plus an empty list."""
    source = json.loads((phantoms / "dataset.json").read_text())

    def single(items):
        return [{"image": str(phantoms / i["image"][0]), "label": str(phantoms / i["label"])} for i in items]

    train = single(source["training"])
    datalist = {
        "training": train[:3],
        "transferal": train[3:5],
        "finetune": train[5:],
        "validation": single(source["validation"]),
        "test": single(source["test"]),
        "empty": [],
    }
    folder = tmp_path_factory.mktemp("single_channel")
    (folder / "dataset.json").write_text(json.dumps(datalist))
    return folder


def tiny(data: Path) -> list[str]:
    return [
        "--dataset_dir",
        str(data),
        "--epochs",
        "1",
        "--val_interval",
        "1",
        "--num_workers",
        "0",
        "--roi_size",
        "[32,32,32]",
    ]


def teacher_overrides(name: str) -> list[str]:
    return ["--teacher_name", name, f"--teacher_nets#{name}#roi_size", "[32,32,32]"]


@pytest.fixture(scope="module")
def annotated(data, tmp_path_factory) -> Path:
    """A copy of the bundle with two one-epoch teachers and their fused pseudo labels."""
    root = copy_bundle(BUNDLE, tmp_path_factory.mktemp("bundle"))
    for name in ("unet", "segresnet"):
        bundle_run(["train.json", "train_teacher.json"], root, *tiny(data), *teacher_overrides(name))
    annotate = ["--fusion", "vote", "--confidence_threshold", "0.6", "--save_probabilities", "True"]
    result = bundle_run(["train.json", "annotate.json"], root, *tiny(data), *annotate)
    assert "annotate: 100%" in result.stderr  # the progress bar
    return root


def test_each_teacher_is_saved_under_models_teacher(annotated):
    for name in ("unet", "segresnet"):
        assert (annotated / "models" / "teacher" / name / "model.pt").exists()
        assert list((annotated / "runs" / f"teacher_{name}").glob("events.out.tfevents.*"))
    assert not (annotated / "models" / "model.pt").exists()


def test_pseudo_labels_have_the_transferal_geometry_and_a_rerun_skips_them(annotated, data):
    pseudo = annotated / "runs" / "pseudo_labels"
    entries = json.loads((pseudo / "datalist.json").read_text())["training"]
    assert len(entries) == 2
    for entry in entries:
        label, image = nib.load(pseudo / entry["label"]), nib.load(entry["image"])
        assert label.shape == image.shape and np.allclose(label.affine, image.affine)
        assert nib.load(pseudo / entry["probabilities"]).shape == (*image.shape, 2)
    manifest = json.loads((pseudo / "manifest.json").read_text())
    assert set(manifest["settings"]["teachers"]) == {"unet", "segresnet"}
    result = bundle_run(
        ["train.json", "annotate.json"],
        annotated,
        *tiny(data),
        "--fusion",
        "vote",
        "--confidence_threshold",
        "0.6",
        "--save_probabilities",
        "True",
    )
    assert "0 case(s) annotated, 2 already done" in result.stdout + result.stderr


def test_student_learns_from_pseudo_labels_resumes_and_exports_a_plain_network(annotated, data):
    from monai.bundle import ConfigParser

    result = bundle_run(["train.json"], annotated, *tiny(data))
    assert "val_mean_dice" in result.stdout + result.stderr
    parser = ConfigParser()
    parser.read_config(str(annotated / "configs" / "inference.json"))
    state = torch.load(annotated / "models" / "model.pt", weights_only=True)
    parser.get_parsed_content("network_def").load_state_dict(state, strict=True)
    result = bundle_run(["train.json"], annotated, *tiny(data), "--epochs", "2")
    log = result.stdout + result.stderr
    assert "resuming from" in log and "Epoch: 2/2" in log and "Epoch: 1/2" not in log


def test_finetuning_starts_from_the_student_and_evaluation_reports_dice_and_hd95(annotated, data):
    student = torch.load(annotated / "models" / "model.pt", weights_only=True)
    bundle_run(["train.json", "finetune.json"], annotated, *tiny(data))
    tuned = torch.load(annotated / "models" / "finetuned" / "model.pt", weights_only=True)
    assert student.keys() == tuned.keys() and any(not torch.equal(student[k], tuned[k]) for k in student)
    bundle_run(["train.json", "finetune.json", "evaluate.json"], annotated, *tiny(data))
    out = annotated / "runs" / "evaluate_finetuned"
    for metric in ("test_mean_dice", "test_hd95_mm"):
        with open(out / f"{metric}_raw.csv") as f:
            rows = list(csv.reader(f))
        assert len(rows) == 1 + 2, rows  # header + the two test cases
        assert all(float(r[1]) >= 0 for r in rows[1:])


def test_ground_truth_upper_bound_and_soft_targets_train(annotated, data):
    bundle_run(["train.json", "train_groundtruth.json"], annotated, *tiny(data))
    assert (annotated / "models" / "groundtruth" / "model.pt").exists()
    bundle_run(["train.json", "train_soft.json"], annotated, *tiny(data))
    assert (annotated / "models" / "soft" / "model.pt").exists()


def test_inference_keeps_the_input_geometry(annotated, data, tmp_path):
    image = json.loads((data / "dataset.json").read_text())["test"][0]["image"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    os.symlink(image, inputs / "case.nii.gz")
    bundle_run(["inference.json"], annotated, "--dataset_dir", str(inputs), "--output_dir", str(tmp_path / "out"))
    pred, src = nib.load(tmp_path / "out" / "case_seg.nii.gz"), nib.load(image)
    assert pred.shape == src.shape and np.allclose(pred.affine, src.affine, atol=1e-4)


def test_verifier_passes(annotated, data):
    verify_bundle(annotated, data)


def test_multi_gpu_config_runs_under_torchrun_on_cpu(annotated, data):
    torchrun_bundle(["train.json", "multi_gpu_train.json"], annotated, 29518, "--run_name", "ddp", *tiny(data))
    assert len(list((annotated / "runs" / "ddp").glob("*checkpoint_epoch=1.pt"))) == 1


def test_bad_input_is_named(annotated, data):
    empty = bundle_run(
        ["train.json", "annotate.json"],
        annotated,
        *tiny(data),
        "--transferal_key",
        "empty",
        "--pseudo_label_dir",
        str(annotated / "runs" / "other"),
        expect_failure=True,
    )
    assert "the transferal set is empty" in empty.stderr
    wrong_classes = bundle_run(
        ["train.json", "annotate.json"],
        annotated,
        *tiny(data),
        "--num_classes",
        "3",
        "--pseudo_label_dir",
        str(annotated / "runs" / "other"),
        expect_failure=True,
    )
    assert "teacher 'unet' failed to load" in wrong_classes.stderr and "shape mismatches" in wrong_classes.stderr
    student_mismatch = bundle_run(
        ["train.json"], annotated, *tiny(data), "--num_classes", "1", "--run_name", "mismatch", expect_failure=True
    )
    assert "holds values [1] outside the 1 classes" in student_mismatch.stderr


def test_exported_bundle_annotates_and_trains_outside_the_repository(data, tmp_path):
    bundle = install_exported(REPO / "bundles" / BUNDLE, tmp_path)  # the shipped bundle, as sent
    check_vendored_common(bundle)
    assert (bundle / "models" / "teacher" / "unet" / "model.pt").exists()
    run_outside(bundle, ["train.json", "annotate.json"], *tiny(data))  # pseudo labels are not shipped
    datalist = json.loads((data / "dataset.json").read_text())
    cases = [(Path(c["image"]), Path(c["label"])) for c in datalist["training"] + datalist["finetune"]]
    image = cases[0][0]
    inference = [
        "--dataset_dir",
        str(image.parent),
        "--image_pattern",
        image.name,
        "--output_dir",
        str(tmp_path / "pred"),
    ]
    run_outside(bundle, ["inference.json"], *inference)
    check_monailabel(bundle, image, tmp_path / "pred" / image.name.replace(".nii.gz", "_seg.nii.gz"), cases, tmp_path)
    run_outside(bundle, ["train.json"], *tiny(data))
    assert list((bundle / "runs").glob("*/checkpoint_epoch=1.pt"))
