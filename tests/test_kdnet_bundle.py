"""End to end: every config of the KD-Net bundle through ``python -m monai.bundle run``, as a user runs it."""

from __future__ import annotations

import csv
import shutil
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
    outside_env,
    run,
    run_outside,
    torchrun_bundle,
    verify_bundle,
)

BUNDLE = "kdnet_brats_mri"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(phantoms, tmp_path_factory) -> Path:
    """A copy of the bundle with a teacher trained for two epochs on the phantoms."""
    root = copy_bundle(BUNDLE, tmp_path_factory.mktemp("bundle"))
    bundle_run(["train.json", "train_teacher.json"], root, *tiny(phantoms), "--epochs", "2")
    return root


def tiny(phantoms: Path) -> list[str]:
    return ["--dataset_dir", str(phantoms), "--epochs", "1", "--roi_size", "[32,32,32]", "--num_workers", "0"]


def student_def():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / BUNDLE / "configs" / "inference.json"))
    return parser.get_parsed_content("network_def")


def test_teacher_is_saved_apart_from_the_student(trained):
    teacher_state = torch.load(trained / "models" / "teacher" / "model.pt", weights_only=True)
    assert teacher_state["convInit.conv.weight"].shape[1] == 2  # reads both modalities
    assert not (trained / "models" / "model.pt").exists()
    assert list((trained / "runs" / "teacher").glob("events.out.tfevents.*"))


def test_distilled_student_logs_every_term_and_exports_a_plain_student(trained, phantoms):
    result = bundle_run(["train.json"], trained, *tiny(phantoms))
    log = result.stdout + result.stderr
    for term in ("loss_seg", "loss_kd", "loss_latent", "val_mean_dice"):
        assert term in log, f"{term} not logged"
    state = torch.load(trained / "models" / "model.pt", weights_only=True)
    student_def().load_state_dict(state, strict=True)  # no adapter or teacher key leaks into model.pt
    checkpoints = list((trained / "runs" / "kd_student").glob("*checkpoint_epoch=1.pt"))
    assert checkpoints and {"model", "loss", "optimizer", "trainer"} <= set(
        torch.load(checkpoints[0], weights_only=True)
    )
    assert list((trained / "runs" / "kd_student").glob("events.out.tfevents.*"))


def test_interrupted_run_resumes_from_last_checkpoint(trained, phantoms):
    result = bundle_run(["train.json"], trained, *tiny(phantoms), "--epochs", "2")
    log = result.stdout + result.stderr
    assert "resuming from" in log and "Epoch: 2/2" in log and "Epoch: 1/2" not in log


def test_baseline_has_no_distillation_terms(trained, phantoms):
    result = bundle_run(["train.json", "train_baseline.json"], trained, *tiny(phantoms))
    log = result.stdout + result.stderr
    assert "loss_seg" in log and "loss_kd" not in log
    assert (trained / "models" / "baseline" / "model.pt").exists()


def test_evaluate_writes_per_case_dice(trained, phantoms):
    bundle_run(["train.json", "evaluate.json"], trained, *tiny(phantoms))
    with open(trained / "runs" / "evaluate_models" / "val_mean_dice_raw.csv") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + 2  # header + the two test cases
    assert all(0.0 <= float(r[1]) <= 1.0 for r in rows[1:])


def test_inference_needs_only_monai_and_keeps_the_input_geometry(trained, phantoms, tmp_path):
    out = tmp_path / "pred"
    bundle_run(["inference.json"], trained, "--dataset_dir", str(phantoms), "--output_dir", str(out))
    preds = sorted(out.glob("*_seg.nii.gz"))
    assert len(preds) == 10
    src = nib.load(next(phantoms.glob(f"**/{preds[0].name.replace('_seg.nii.gz', '.nii.gz')}")))
    pred = nib.load(preds[0])
    assert pred.shape == src.shape
    np.testing.assert_allclose(pred.affine, src.affine, atol=1e-4)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}


def test_verifier_passes(trained, phantoms):
    verify_bundle(trained, phantoms)


def test_student_modality_out_of_range_is_reported(trained, phantoms):
    overrides = [*tiny(phantoms), "--student_modalities", "[5]"]
    result = bundle_run(["train.json", "train_baseline.json"], trained, *overrides, expect_failure=True)
    assert "channel index [5] out of range: 'image' has 2 channel(s) (FLAIR, T1)" in result.stderr


def test_multi_gpu_config_runs_under_torchrun_on_cpu(trained, phantoms):
    configs = ["train.json", "train_baseline.json", "multi_gpu_train.json"]
    torchrun_bundle(configs, trained, 29517, "--run_name", "ddp", *tiny(phantoms))
    assert len(list((trained / "runs" / "ddp").glob("*checkpoint_epoch=1.pt"))) == 1


def test_exported_bundle_runs_outside_the_repository_and_names_a_missing_common(phantoms, tmp_path):
    bundle = install_exported(REPO / "bundles" / BUNDLE, tmp_path)  # the shipped bundle, as sent
    check_vendored_common(bundle)
    run_outside(bundle, ["inference.json"], "--dataset_dir", str(phantoms), "--output_dir", str(tmp_path / "pred"))
    assert len(list((tmp_path / "pred").glob("*_seg.nii.gz"))) == 10
    # MONAI Label keeps one file per study: FLAIR and T1 stacked as a 4-D image (the channels the
    # training selects from), the T1 alone for the student's inference
    cases = []
    for case in sorted(p for p in phantoms.iterdir() if p.is_dir())[:4]:
        modalities = [nib.load(case / f"{case.name}_{m}.nii.gz") for m in ("flair", "t1")]
        stacked = np.stack([np.asarray(m.dataobj) for m in modalities], axis=-1)
        nib.save(nib.Nifti1Image(stacked, modalities[0].affine), tmp_path / f"{case.name}_flair_t1.nii.gz")
        cases.append((tmp_path / f"{case.name}_flair_t1.nii.gz", case / f"{case.name}_seg.nii.gz"))
    t1 = cases[0][1].parent / cases[0][1].name.replace("_seg", "_t1")
    check_monailabel(bundle, t1, tmp_path / "pred" / t1.name.replace(".nii.gz", "_seg.nii.gz"), cases, tmp_path)
    result = run_outside(bundle, ["train.json"], *tiny(phantoms))
    assert "epoch(s): starting a new run" in result.stdout + result.stderr  # MONAI Label's run has finished
    assert list((bundle / "runs").glob("*/checkpoint_epoch=1.pt"))
    shutil.rmtree(bundle / "common")  # a bundle sent without it, where the repository is not installed either
    blocker = (
        "import sys, runpy\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'common' or name.startswith('common.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['monai.bundle'] + sys.argv[1:]\n"
        "runpy.run_module('monai.bundle', run_name='__main__')\n"
    )
    args = [sys.executable, "-c", blocker, "run", "--config_file", "configs/train.json", *tiny(phantoms)]
    result = run(args, cwd=bundle, env=outside_env(), expect_failure=True)
    assert "needs the shared package `common`" in result.stderr
    assert "pip install -e" in result.stderr
