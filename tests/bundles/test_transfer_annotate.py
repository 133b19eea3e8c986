"""The transfer bundle's annotate stage (``scripts/annotate.py``): black-box teachers, fusion,
pseudo-label geometry, resumability, bad input."""

from __future__ import annotations

import hashlib
import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.networks.nets import SegResNet
from monai.transforms import EnsureChannelFirstd, LoadImaged, Orientationd, ScaleIntensityd, Spacingd
from torch import nn

from tests.helpers import BUNDLES, bundle_module

annotate = bundle_module(BUNDLES / "agnostic_transfer_la_mri", "annotate")
BundleTeacher, NetworkTeacher, PseudoLabeler = annotate.BundleTeacher, annotate.NetworkTeacher, annotate.PseudoLabeler
Teacher, TorchScriptTeacher, fuse, image_paths = (
    annotate.Teacher,
    annotate.TorchScriptTeacher,
    annotate.fuse,
    annotate.image_paths,
)


class Threshold(nn.Module):
    """Logits of ``[background, foreground]`` from intensity: foreground where the image exceeds ``level``."""

    def __init__(self, level: float, classes: int = 2) -> None:
        super().__init__()
        self.level, self.classes = level, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        foreground = 10 * (x - self.level)
        return torch.cat([-foreground] + [foreground] * (self.classes - 1), dim=1)


# a non-RAS orientation and anisotropic spacing, so that undoing each teacher's preprocessing is tested
AFFINE = np.array([[-0.8, 0, 0, 10], [0, -0.8, 0, 5], [0, 0, 2.5, -3], [0, 0, 0, 1]])


def write_image(path, shape=(30, 26, 9), seed=0) -> str:
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, np.float32)
    data[8:20, 6:18, 2:7] = 1.0
    data += rng.normal(0, 0.05, shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return str(path)


def teacher(name="t", level=0.5, pixdim=(1.5, 1.5, 1.5), classes=2, **kwargs) -> Teacher:
    preprocessing = [
        LoadImaged("image", image_only=True),
        EnsureChannelFirstd("image"),
        Orientationd("image", axcodes="RAS"),
        Spacingd("image", pixdim=pixdim),
    ]
    return Teacher(name, Threshold(level, classes), preprocessing, SimpleInferer(), **kwargs)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "transferal"
    folder.mkdir()
    return [write_image(folder / f"case{i}.nii.gz", seed=i) for i in range(3)]


def test_fuse_mean_and_vote_match_hand_computed_values():
    a = torch.tensor([[0.9, 0.4, 0.45], [0.1, 0.6, 0.55]])  # (C=2, 3 voxels)
    b = torch.tensor([[0.2, 0.3, 0.65], [0.8, 0.7, 0.35]])
    c = torch.tensor([[0.3, 0.8, 0.6], [0.7, 0.2, 0.4]])
    fused, labels = fuse([a, b], "mean")
    assert torch.allclose(fused, torch.tensor([[0.55, 0.35, 0.55], [0.45, 0.65, 0.45]]))
    assert labels.tolist() == [0, 1, 0]
    votes, labels = fuse([a, b, c], "vote")  # argmaxes: a 0,1,1  b 1,1,0  c 1,0,0
    assert torch.allclose(votes[1], torch.tensor([2 / 3, 2 / 3, 1 / 3]))
    assert labels.tolist() == [1, 1, 0]
    _, tie = fuse([a, b], "vote")  # voxel 0: one vote each, mean probability 0.55 for class 0
    assert tie[0].item() == 0
    with pytest.raises(ValueError, match="fusion must be one of"):
        fuse([a], "median")


def test_teacher_output_is_on_the_input_grid_whatever_its_spacing_and_orientation(images):
    shape = nib.load(images[0]).shape
    for pixdim in ((1.5, 1.5, 1.5), (3.0, 2.0, 1.0)):
        probs = teacher(pixdim=pixdim).probabilities(images[0], shape)
        assert tuple(probs.shape) == (2, *shape)
        assert torch.allclose(probs.sum(0), torch.ones(shape), atol=1e-4)
        truth = np.asarray(nib.load(images[0]).dataobj) > 0.5
        agreement = ((probs[1].numpy() > 0.5) == truth).mean()
        assert agreement > 0.97, f"output not aligned with the input grid at pixdim {pixdim}: {agreement:.3f}"


def test_sigmoid_teacher_gives_background_and_foreground(images):
    one_channel = Threshold(0.5, classes=2)
    net = nn.Sequential(one_channel, nn.Conv3d(2, 1, 1, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1, 1))
    t = Teacher("sig", net, teacher().preprocessing, SimpleInferer(), activation="sigmoid")
    shape = nib.load(images[0]).shape
    assert torch.allclose(t.probabilities(images[0], shape), teacher().probabilities(images[0], shape), atol=1e-5)


def test_pseudo_labels_keep_geometry_and_manifest_records_teachers(images, tmp_path):
    out = tmp_path / "pseudo"
    datalist = PseudoLabeler(
        [teacher("a"), teacher("b", pixdim=(2.5, 2.5, 2.5))], images, str(out), progress=False
    ).run()
    entries = json.loads(open(datalist).read())["training"]
    assert [os.path.basename(e["image"]) for e in entries] == [os.path.basename(p) for p in images]
    for entry, image in zip(entries, images, strict=True):
        label, source = nib.load(out / entry["label"]), nib.load(image)
        assert label.shape == source.shape and np.allclose(label.affine, source.affine)
        assert label.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1}
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["settings"]["teachers"]) == {"a", "b"}
    assert not [f for f in os.listdir(out / "labels") if f.startswith(".partial")]


def test_confidence_mask_marks_uncertain_voxels_and_probabilities_are_kept(images, tmp_path):
    out = tmp_path / "pseudo"
    # the two teachers disagree between intensity 0.3 and 0.7: fused foreground probability near 0.5 there
    labeler = PseudoLabeler(
        [teacher("low", level=0.3), teacher("high", level=0.7)],
        images[:1],
        str(out),
        confidence_threshold=0.9,
        save_probabilities=True,
        progress=False,
    )
    entry = json.loads(open(labeler.run()).read())["training"][0]
    labels = np.asarray(nib.load(out / entry["label"]).dataobj)
    probs = np.asarray(nib.load(out / entry["probabilities"]).dataobj)
    assert probs.shape == (*labels.shape, 2) and np.allclose(probs.sum(-1), 1, atol=2 / 255)
    uncertain = probs.max(-1) < 0.9
    assert uncertain.any() and (labels[uncertain] == 255).all() and (labels[~uncertain] != 255).all()


def test_rerun_skips_verified_cases_and_redoes_altered_or_changed_ones(images, tmp_path, caplog):
    out = tmp_path / "pseudo"
    PseudoLabeler([teacher("a")], images, str(out), progress=False).run()
    first = {f: (out / "labels" / f).stat().st_mtime_ns for f in os.listdir(out / "labels")}
    caplog.set_level("INFO", logger=annotate.__name__)
    PseudoLabeler([teacher("a")], images, str(out), progress=False).run()
    assert "0 case(s) annotated, 3 already done" in caplog.text
    assert first == {f: (out / "labels" / f).stat().st_mtime_ns for f in os.listdir(out / "labels")}
    (out / "labels" / "case1.nii.gz").write_bytes(b"truncated")
    PseudoLabeler([teacher("a")], images, str(out), progress=False).run()
    assert "1 case(s) annotated, 2 already done" in caplog.text
    PseudoLabeler([teacher("a")], images, str(out), fusion="vote", progress=False).run()
    assert "settings changed" in caplog.text and "3 case(s) annotated, 0 already done" in caplog.text


def test_a_failure_mid_run_loses_nothing_already_written(images, tmp_path):
    out = tmp_path / "pseudo"
    broken = teacher("a")
    original = broken.probabilities

    def fail_on_third(path, shape):
        if path.endswith("case2.nii.gz"):
            raise RuntimeError("teacher crashed")
        return original(path, shape)

    broken.probabilities = fail_on_third
    with pytest.raises(RuntimeError, match="teacher crashed"):
        PseudoLabeler([broken], images, str(out), progress=False).run()
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["cases"]) == ["case0", "case1"]
    assert sorted(os.listdir(out / "labels")) == ["case0.nii.gz", "case1.nii.gz"]
    PseudoLabeler([teacher("a")], images, str(out), progress=False).run()
    assert sorted(os.listdir(out / "labels")) == ["case0.nii.gz", "case1.nii.gz", "case2.nii.gz"]


def test_teachers_with_different_class_counts_are_named(images, tmp_path):
    with pytest.raises(ValueError, match=r"\{'two': 2, 'three': 3\}"):
        PseudoLabeler([teacher("two"), teacher("three", classes=3)], images, str(tmp_path), progress=False).run()
    with pytest.raises(ValueError, match="the student expects 3"):
        PseudoLabeler([teacher("two")], images, str(tmp_path), num_classes=3, progress=False).run()
    assert not os.listdir(tmp_path / "labels")


def test_unreadable_or_missing_transferal_image_is_named_before_anything_is_written(images, tmp_path):
    broken = os.path.join(os.path.dirname(images[0]), "broken.nii.gz")
    with open(images[1], "rb") as f:
        open(broken, "wb").write(f.read()[:200])
    out = tmp_path / "pseudo"
    with pytest.raises(ValueError, match="broken.nii.gz"):
        PseudoLabeler([teacher()], [*images, broken], str(out), progress=False).run()
    with pytest.raises(FileNotFoundError, match="absent.nii.gz"):
        PseudoLabeler([teacher()], [*images, str(tmp_path / "absent.nii.gz")], str(out), progress=False).run()
    assert not (out / "labels").exists() or not os.listdir(out / "labels")


def test_empty_transferal_set_and_bad_settings_are_refused(tmp_path):
    (tmp_path / "datalist.json").write_text(json.dumps({"transferal": []}))
    with pytest.raises(ValueError, match="transferal set is empty"):
        image_paths(str(tmp_path / "datalist.json"), "transferal", str(tmp_path))
    with pytest.raises(ValueError, match="transferal set is empty"):
        image_paths(folder=str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="transferal set is empty"):
        PseudoLabeler([teacher()], [], str(tmp_path))
    with pytest.raises(ValueError, match="confidence_threshold"):
        PseudoLabeler([teacher()], ["x.nii.gz"], str(tmp_path), confidence_threshold=1.5)
    with pytest.raises(ValueError, match="unique"):
        PseudoLabeler([teacher("a"), teacher("a")], ["x.nii.gz"], str(tmp_path))


def small_segresnet() -> SegResNet:
    return SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8)


def test_network_and_torchscript_teachers_agree_and_load_failures_name_the_teacher(images, tmp_path):
    net = small_segresnet().eval()
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    torch.jit.script(net).save(str(tmp_path / "teacher.ts"))
    prep = teacher().preprocessing.transforms + (ScaleIntensityd("image"),)
    inferer = SlidingWindowInferer((16, 16, 8))
    shape = nib.load(images[0]).shape
    from_weights = NetworkTeacher(
        "w", small_segresnet(), str(tmp_path / "weights.pt"), preprocessing=prep, inferer=inferer
    )
    from_script = TorchScriptTeacher("ts", str(tmp_path / "teacher.ts"), preprocessing=prep, inferer=inferer)
    assert torch.allclose(
        from_weights.probabilities(images[0], shape), from_script.probabilities(images[0], shape), atol=1e-5
    )
    weights_hash = hashlib.sha256((tmp_path / "weights.pt").read_bytes()).hexdigest()  # computed apart from sha256()
    assert from_weights.fingerprint()["sources"] == {str(tmp_path / "weights.pt"): weights_hash}
    wrong = SegResNet(spatial_dims=3, in_channels=1, out_channels=3, init_filters=8)
    with pytest.raises(ValueError, match="teacher 'wide' failed to load.*shape mismatches"):
        NetworkTeacher("wide", wrong, str(tmp_path / "weights.pt"), preprocessing=prep, inferer=inferer)
    with pytest.raises(FileNotFoundError, match="teacher 'gone' failed to load"):
        NetworkTeacher("gone", small_segresnet(), str(tmp_path / "none.pt"), preprocessing=prep, inferer=inferer)
    with pytest.raises(ValueError, match="teacher 'junk' failed to load TorchScript"):
        TorchScriptTeacher("junk", str(tmp_path / "weights.pt"), preprocessing=prep, inferer=inferer)


def test_a_monai_bundle_folder_is_a_teacher(images, tmp_path):
    """The KD-Net bundle's student (T1 SegResNet, its own 2 mm preprocessing) labels these images."""
    bundle = BUNDLES / "kdnet_brats_mri"
    t = BundleTeacher("kdnet", str(bundle))
    shape = nib.load(images[0]).shape
    probs = t.probabilities(images[0], shape)
    assert tuple(probs.shape) == (2, *shape) and torch.allclose(probs.sum(0), torch.ones(shape), atol=1e-4)
    assert {os.path.basename(s) for s in t.fingerprint()["sources"]} == {"inference.json", "model.pt"}
    with pytest.raises(ValueError, match="teacher 'nothing' failed to load from bundle"):
        BundleTeacher("nothing", str(tmp_path))
