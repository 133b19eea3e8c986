"""What only the KD-Net bundle has: a teacher reading more modalities than its student, and the
student's modality chosen by configuration (``scripts/transforms.py``)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import BUNDLES, bundle_module, logged_terms, run_bundle, run_fails

NAME = "kdnet_brats_mri"
pytestmark = pytest.mark.xdist_group(NAME)  # the worker that trains this bundle for the contract tests
transforms = bundle_module(BUNDLES / NAME, "transforms")


def test_the_teacher_reads_both_modalities_and_is_saved_apart_from_the_student(trained):
    bundle = trained(NAME)
    teacher = torch.load(bundle.root / "models" / "teacher" / "model.pt", weights_only=True)
    student = torch.load(bundle.root / "models" / "model.pt", weights_only=True)
    assert teacher["convInit.conv.weight"].shape[1] == 2 and student["convInit.conv.weight"].shape[1] == 1


def test_a_student_modality_out_of_range_is_named(trained):
    bundle = trained(NAME)
    overrides = bundle.profile.overrides(bundle.data, student_modalities=[5], run_name="bad_modality")
    error = run_fails(bundle.root, ["train.json", "train_baseline.json"], **overrides)
    assert "channel index [5] out of range: 'image' has 2 channel(s) (FLAIR, T1)" in error


def test_select_channels_keeps_order_and_reports_out_of_range():
    data = {"image": torch.arange(3.0).view(3, 1, 1, 1)}
    assert transforms.SelectChannelsd("image", [2, 0])(data)["image"].flatten().tolist() == [2.0, 0.0]
    with pytest.raises(ValueError, match=r"channel index \[3\] out of range: 'image' has 2 channel\(s\) \(FLAIR, T1\)"):
        transforms.SelectChannelsd("image", [3], names=["FLAIR", "T1"])({"image": torch.zeros(2, 1, 1, 1)})


def test_the_paper_style_setting_is_a_named_overlay(trained, tmp_path):
    from monai.bundle import ConfigParser

    bundle = trained(NAME)
    overrides = bundle.profile.overrides(bundle.data, model_dir=str(tmp_path), run_name="paper")
    log = run_bundle(bundle.root, ["train.json", "train_paper.json"], **overrides)
    assert set(logged_terms(log)) == {"seg", "kd", "latent"}
    parser = ConfigParser()
    parser.read_config([str(bundle.root / "configs" / f) for f in ("train.json", "train_paper.json")])
    latent = parser.get_parsed_content("latent_term#loss")
    assert (latent.mode, latent.temperature, latent.normalize, parser["latent_weight"]) == ("kl", 1.0, None, 0.1)


def test_multi_modal_images_keep_every_channel_when_data_loader_workers_are_on(tmp_path):
    """MONAI 1.6's ``NibabelReader`` keeps the file names of its last ``read`` on the instance, so two
    threads filling a ``CacheDataset`` drop channels of a multi-file image (about 1 build in 3 with 8
    cases, seen as "'image' has 1 channel(s)" once ``num_workers`` > 0): the caches fill in one
    thread, whatever ``num_workers`` the data loaders get."""
    from monai.bundle import ConfigParser

    from tools.bundle.isolation import bundle_scripts
    from tools.data import synthetic_brats

    data = tmp_path / "brats"
    synthetic_brats.main(["--out", str(data), "--cases", "16", "--size", "16", "--val", "4", "--test", "0"])
    configs = BUNDLES / NAME / "configs"
    for build in range(3):
        parser = ConfigParser()
        parser.read_config([str(configs / "train.json"), str(configs / "train_teacher.json")])
        parser.update({"bundle_root": str(BUNDLES / NAME), "dataset_dir": str(data), "num_workers": 2})
        parser.update({"datalist": str(data / "dataset.json"), "pixdim": [2.0, 2.0, 2.0], "roi_size": [16, 16, 16]})
        for part in ("train", "validate"):
            assert parser[part]["dataset"]["num_workers"] == 1
            with bundle_scripts(BUNDLES / NAME):
                cached = parser.get_parsed_content(f"{part}#dataset")._cache
            assert [item["image"].shape[0] for item in cached] == [2] * len(cached), (part, build)
