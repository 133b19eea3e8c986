"""An nnU-Net v2 results folder as a teacher of the transfer bundle (``scripts/nnunet_teacher.py``):
the same probabilities as nnU-Net's own prediction, clear refusals, annotate → student training.
Optional dependency: skipped unless ``requirements-nnunet.txt`` is installed (CI installs it)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2", reason="optional: pip install --no-deps -r requirements-nnunet.txt")

from tests.helpers import BUNDLES, bundle_module, run, run_bundle  # noqa: E402

NAME = "agnostic_transfer_la_mri"
pytestmark = pytest.mark.xdist_group(NAME)
nnunet_teacher = bundle_module(BUNDLES / NAME, "nnunet_teacher")
annotate = bundle_module(BUNDLES / NAME, "annotate")

# a non-RAS orientation and anisotropic spacing: the output must come back to the file's own grid
AFFINE = np.array([[-1.5, 0, 0, 10], [0, 1.0, 0, 5], [0, 0, 2.0, -3], [0, 0, 0, 1]])
ARCHITECTURE = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 2,
        "features_per_stage": [4, 8],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [2, 2, 2]],
        "n_conv_per_stage": [1, 1],
        "n_conv_per_stage_decoder": [1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def resampling(is_seg: bool, order: int) -> dict:
    return {"is_seg": is_seg, "order": order, "order_z": 0, "force_separate_z": None}


def tiny_results_folder(folder: Path, folds=(0, 1), dataset_extra=None, reader="SimpleITKIO", channels=1) -> Path:
    """An nnU-Net v2 results folder with random weights (about 2,600 parameters, spacing 2 mm, 16³
    patches), laid out and saved as ``nnUNetv2_train`` does, numpy scalars in the checkpoints included."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [16, 16, 16],
        "median_image_size_in_voxels": [12, 20, 20],
        "spacing": [2.0, 2.0, 2.0],
        "normalization_schemes": ["ZScoreNormalization"] * channels,
        "use_mask_for_norm": [False] * channels,
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling(False, 3),
        "resampling_fn_seg_kwargs": resampling(True, 1),
        "resampling_fn_probabilities_kwargs": resampling(False, 1),
        "architecture": ARCHITECTURE,
        "batch_dice": True,
    }
    plans = {
        "dataset_name": "Dataset001_Tiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [2.0, 1.0, 1.5],
        "original_median_shape_after_transp": [12, 20, 20],
        "image_reader_writer": reader,
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "3d_fullres": configuration,
            "3d_cascade_fullres": configuration | {"previous_stage": "3d_lowres"},
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {
                "max": 3.0,
                "mean": 1.0,
                "median": 1.0,
                "min": -1.0,
                "percentile_00_5": -0.5,
                "percentile_99_5": 2.5,
                "std": 0.5,
            }
            for c in range(channels)
        },
    }
    dataset = {
        "channel_names": {str(c): f"MRI{c}" for c in range(channels)},
        "labels": {"background": 0, "left_atrium": 1},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    } | (dataset_extra or {})
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    manager = PlansManager(plans)
    for fold in folds:
        torch.manual_seed(fold)
        outputs = manager.get_label_manager(dataset).num_segmentation_heads
        network = nnUNetTrainer.build_network_architecture(
            manager, manager.get_configuration("3d_fullres"), channels, outputs, enable_deep_supervision=False
        )
        (folder / f"fold_{fold}").mkdir()
        checkpoint = {
            "network_weights": network.state_dict(),
            "optimizer_state": {},
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.5), np.float64(0.6)], "ema_fg_dice": [np.float32(0.5)]},
            "_best_ema": np.float64(0.6),
            "current_epoch": 2,
            "init_args": {
                "plans": plans,
                "configuration": "3d_fullres",
                "fold": fold,
                "dataset_json": dataset,
                "device": torch.device("cpu"),
            },
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": (0, 1, 2),
        }
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def write_image(path: Path, shape=(20, 22, 12), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 0.3, shape).astype(np.float32)
    data[5:14, 6:16, 3:9] += 1.5
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def test_probabilities_equal_nnunet_own_prediction_on_the_image_grid(tmp_path):
    folder = tiny_results_folder(tmp_path / "Dataset001_Tiny" / "nnUNetTrainer__nnUNetPlans__3d_fullres")
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = write_image(inputs / "case_0000.nii.gz")
    teacher = nnunet_teacher.NnUNetTeacher("nnunet", str(folder), folds=[0, 1], num_classes=2)
    ours = teacher.probabilities(str(image), (20, 22, 12))

    # nnU-Net's own command on the same folder, folds and image, probabilities saved
    predict = Path(sys.executable).parent / "nnUNetv2_predict_from_modelfolder"
    command = [str(predict), "-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(folder), "-f", "0", "1"]
    run([*command, "--save_probabilities", "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar"])
    theirs = np.load(tmp_path / "out" / "case.npz")["probabilities"]  # (C, z, y, x)
    assert ours.shape == (2, 20, 22, 12)
    torch.testing.assert_close(ours, torch.as_tensor(theirs.transpose(0, 3, 2, 1)), atol=1e-5, rtol=0)
    segmentation = nib.load(tmp_path / "out" / "case.nii.gz")
    assert np.array_equal(np.asarray(segmentation.dataobj), ours.argmax(0).numpy())
    np.testing.assert_allclose(segmentation.affine, AFFINE, atol=1e-5)
    assert 0.0 < float(ours[1].mean()) < 1.0  # two classes really present, not a constant map

    fingerprint = teacher.fingerprint()
    assert (fingerprint["configuration"], fingerprint["folds"], fingerprint["use_mirroring"]) == (
        "3d_fullres",
        ["0", "1"],
        True,
    )
    assert sorted(os.path.basename(s) for s in fingerprint["sources"]) == sorted(
        ["plans.json", "dataset.json", "checkpoint_final.pth", "checkpoint_final.pth"]
    )


def test_checkpoints_load_weights_only_with_the_documented_allow_list(tmp_path):
    folder = tiny_results_folder(tmp_path / "results")
    path = folder / "fold_0" / "checkpoint_final.pth"
    with pytest.raises(Exception, match="weights_only"):
        torch.load(path, weights_only=True)  # numpy scalars: refused without the allow-list
    checkpoint = nnunet_teacher.load_checkpoint(str(path))
    assert checkpoint["_best_ema"] == pytest.approx(0.6) and checkpoint["trainer_name"] == "nnUNetTrainer"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"folds": [0, 3]}, r"fold_3/checkpoint_final.pth not found; folds with checkpoint_final.pth: \['0', '1'\]"),
        ({"num_classes": 3}, r"its dataset has 2 classes \{'background': 0, 'left_atrium': 1\}, the student expects 3"),
    ],
)
def test_a_missing_fold_and_a_class_mismatch_are_named(tmp_path, change, message):
    folder = tiny_results_folder(tmp_path / "results")
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        nnunet_teacher.NnUNetTeacher("nnunet", str(folder), **({"folds": [0]} | change))


@pytest.mark.parametrize(
    ("folder_kwargs", "message"),
    [
        (
            {"dataset_extra": {"labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2]}},
            "a region-based model",
        ),
        ({"reader": "NibabelIOWithReorient"}, "'NibabelIOWithReorient' does not keep the image's voxel grid"),
        ({"channels": 2}, r"the model reads 2 channels"),
    ],
)
def test_models_it_cannot_distil_are_refused_with_the_reason(tmp_path, folder_kwargs, message):
    folder = tiny_results_folder(tmp_path / "results", **folder_kwargs)
    with pytest.raises(ValueError, match=message):
        nnunet_teacher.NnUNetTeacher("nnunet", str(folder))


def test_a_cascade_stage_is_refused(tmp_path):
    folder = tiny_results_folder(tmp_path / "results")
    for fold in (0, 1):
        path = folder / f"fold_{fold}" / "checkpoint_final.pth"
        checkpoint = nnunet_teacher.load_checkpoint(str(path))
        checkpoint["init_args"]["configuration"] = "3d_cascade_fullres"
        torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="'3d_cascade_fullres' is a cascade stage"):
        nnunet_teacher.NnUNetTeacher("nnunet", str(folder))


def test_annotate_with_an_nnunet_teacher_then_train_the_student(trained, tmp_path):
    bundle = trained(NAME)
    folder = tiny_results_folder(tmp_path / "results")
    labels = tmp_path / "pseudo"
    overrides = bundle.profile.overrides(
        bundle.data, nnunet_results=str(folder), nnunet_folds=[0, 1], pseudo_label_dir=str(labels)
    )
    log = run_bundle(bundle.root, ["train.json", "annotate.json", "annotate_nnunet.json"], **overrides)
    assert "labelled by ['nnunet']" in log
    manifest = json.loads((labels / "manifest.json").read_text())
    sources = manifest["settings"]["teachers"]["nnunet"]["sources"]
    assert len(sources) == 4 and all(len(digest) == 64 for digest in sources.values())
    entry = next(iter(manifest["cases"].values()))
    label, image = nib.load(labels / entry["label"]), nib.load(entry["image"])
    assert label.shape == image.shape and np.allclose(label.affine, image.affine)
    shutil.rmtree(tmp_path / "student", ignore_errors=True)
    overrides = bundle.profile.overrides(
        bundle.data, pseudo_label_dir=str(labels), model_dir=str(tmp_path / "student"), run_name="from_nnunet"
    )
    run_bundle(bundle.root, ["train.json"], **overrides)
    assert (tmp_path / "student" / "model.pt").is_file()
    assert annotate.sha256(str(labels / entry["label"])) == entry["label_sha256"]


def test_a_trainer_variant_loads_and_one_that_builds_another_network_is_named(tmp_path):
    folder = tiny_results_folder(tmp_path / "results", folds=(0,))
    path = folder / "fold_0" / "checkpoint_final.pth"
    checkpoint = nnunet_teacher.load_checkpoint(str(path))
    checkpoint["trainer_name"] = "nnUNetTrainer_250epochs"  # same network, another schedule
    torch.save(checkpoint, path)
    variant = nnunet_teacher.NnUNetTeacher("nnunet", str(folder), folds=[0])
    assert variant.settings["trainer"] == "nnUNetTrainer_250epochs"
    checkpoint["trainer_name"] = "nnUNetTrainerWider"
    checkpoint["network_weights"]["extra.weight"] = torch.zeros(1)
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="trainer 'nnUNetTrainerWider' builds another network"):
        nnunet_teacher.NnUNetTeacher("nnunet", str(folder), folds=[0])
