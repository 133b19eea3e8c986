import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SCHEMA, run

sys.path.insert(0, str(REPO / "tools"))
from brats_datalist import brats_cases  # noqa: E402
from compare_ddp import best_metric  # noqa: E402
from split_datalist import split_cases  # noqa: E402
from tumour_ct_datalist import find_cases  # noqa: E402


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


@pytest.mark.parametrize("layout", ["HGG/Brats18_TCIA01_1/Brats18_TCIA01_1", "BraTS2021_00000/BraTS2021_00000"])
def test_brats_layouts_become_datalist_entries(tmp_path, layout):
    for m in ("flair", "t1", "t1ce", "t2", "seg"):
        touch(tmp_path / f"{layout}_{m}.nii.gz")
    entries = brats_cases(tmp_path, ["flair", "t1"])
    assert entries == [{"image": [f"{layout}_flair.nii.gz", f"{layout}_t1.nii.gz"], "label": f"{layout}_seg.nii.gz"}]


def test_brats_missing_modality_names_the_file(tmp_path):
    touch(tmp_path / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz")
    touch(tmp_path / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz")
    with pytest.raises(FileNotFoundError, match="BraTS2021_00001_t1.nii.gz"):
        brats_cases(tmp_path, ["flair", "t1"])
    with pytest.raises(FileNotFoundError, match="no '\\*_seg.nii.gz'"):
        brats_cases(tmp_path / "BraTS2021_00001" / "nothing", ["flair"])


def test_split_is_seeded_disjoint_and_complete():
    cases = [{"image": f"c{i}"} for i in range(16)]
    a, b = split_cases(cases, 2, 4, seed=0), split_cases(cases, 2, 4, seed=0)
    assert a == b and split_cases(cases, 2, 4, seed=1) != a
    names = [c["image"] for key in ("training", "validation", "test") for c in a[key]]
    assert sorted(names) == sorted(c["image"] for c in cases)
    assert (len(a["training"]), len(a["validation"]), len(a["test"])) == (10, 2, 4)
    with pytest.raises(ValueError, match="out of 16 and leave some for training"):
        split_cases(cases, 10, 6, seed=0)


def test_split_extra_lists_are_disjoint_and_keep_the_test_cases():
    cases = [{"image": f"c{i}"} for i in range(20)]
    split = split_cases(cases, 2, 4, seed=0, extra={"transferal": 6, "finetune": 2})
    assert {k: len(v) for k, v in split.items()} == {
        "training": 6,
        "test": 4,
        "validation": 2,
        "transferal": 6,
        "finetune": 2,
    }
    names = [c["image"] for items in split.values() for c in items]
    assert sorted(names) == sorted(c["image"] for c in cases)
    assert split["test"] == split_cases(cases, 2, 4, seed=0)["test"]


def test_synthetic_phantoms_are_seeded_and_lesion_is_faint_in_t1(tmp_path):
    import nibabel as nib
    import numpy as np

    for name in ("a", "b"):
        run(
            [
                sys.executable,
                "tools/make_synthetic_brats.py",
                "--out",
                str(tmp_path / name),
                "--cases",
                "3",
                "--size",
                "24",
                "--val",
                "1",
                "--test",
                "1",
                "--seed",
                "3",
            ]
        )
    datalist = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [1, 1, 1]
    case = datalist["training"][0]
    flair, t1 = (np.asarray(nib.load(tmp_path / "a" / f).dataobj) for f in case["image"])
    same = np.asarray(nib.load(tmp_path / "b" / case["image"][0]).dataobj)
    np.testing.assert_array_equal(flair, same)
    label = np.asarray(nib.load(tmp_path / "a" / case["label"]).dataobj) > 0
    head = (flair > 30) & ~label
    contrast = [abs(img[label].mean() - img[head].mean()) / img[head].std() for img in (flair, t1)]
    assert contrast[0] > 2 * contrast[1] > 0


def test_verifier_reports_a_version_without_changelog(tmp_path):
    from verify_bundle import run_checks

    bundle = tmp_path / "b"
    (bundle / "configs").mkdir(parents=True)
    meta = json.loads((REPO / "bundles" / "kdnet_brats_mri" / "configs" / "metadata.json").read_text())
    meta["version"] = "9.9.9"
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    results = dict(run_checks(str(bundle), str(SCHEMA)))
    missing = "missing ['LICENSE', 'configs/inference.json', 'models/model.pt', 'docs/README.md']"
    assert missing in results["required files"]
    assert "version '9.9.9' has no changelog entry" in results["version in changelog"]


def test_model_spec_separates_configs_from_overrides():
    from model_cost import model_spec

    assert model_spec("train.json,train_teacher.json,teacher_name=segresnet,roi_size=[32,32,32]") == (
        ["train.json", "train_teacher.json"],
        {"teacher_name": "segresnet", "roi_size": [32, 32, 32]},
    )


def test_results_table_reports_each_metric_over_runs(tmp_path):
    for run_dir, dice, hd in (("a", 0.8, 4.0), ("b", 0.6, 6.0)):
        (tmp_path / run_dir).mkdir()
        for metric, value in (("test_mean_dice", dice), ("test_hd95_mm", hd)):
            (tmp_path / run_dir / f"{metric}_summary.csv").write_text(f"class,mean\nclass0,{value}\nmean,{value}\n")
    args = ["--metric", "test_mean_dice", "test_hd95_mm", "--row", "student", str(tmp_path / "a"), str(tmp_path / "b")]
    out = run([sys.executable, "tools/results_table.py", *args]).stdout
    assert "| student | 2 | 0.700 ± 0.141 | 0.800, 0.600 | 5.000 ± 1.414 | 4.000, 6.000 |" in out
    (tmp_path / "c").mkdir()  # a multi-class summary: one row per class
    (tmp_path / "c" / "test_mean_dice_summary.csv").write_text("class,mean\nclass0,0.5\nclass1,0.9\nmean,0.7\n")
    classes = ["--metric", "test_mean_dice:class1", "test_mean_dice", "--row", "multi", str(tmp_path / "c")]
    assert (
        "| multi | 1 | 0.900 | 0.900 | 0.700 | 0.700 |"
        in run([sys.executable, "tools/results_table.py", *classes]).stdout
    )
    for run_dir, first, second in (("a", 0.9, 0.5), ("b", 0.7, 0.3)):
        raw = f"filename,class0,mean\n/d/x1.nii.gz,{first},{first}\n/d/x2.nii.gz,{second},{second}\n"
        (tmp_path / run_dir / "test_mean_dice_raw.csv").write_text(raw)
    rows = ["--row", "A", str(tmp_path / "a"), "--row", "B", str(tmp_path / "b")]
    out = run([sys.executable, "tools/results_table.py", "--metric", "test_mean_dice", "--per_case", *rows]).stdout
    assert "| x1 | 0.900 | 0.700 |" in out and "| x2 | 0.500 | 0.300 |" in out


def test_pseudo_label_quality_scores_confident_voxels_against_ground_truth(tmp_path):
    import nibabel as nib
    import numpy as np

    truth, pseudo = np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8)
    truth[:2] = 1  # 32 voxels
    pseudo[:1] = 1  # 16 voxels inside the truth: Dice 2*16/48
    pseudo[3, 3, 3] = 255  # ignored, and not counted against either side
    for name, array in (("img", truth.astype(np.float32)), ("lab", truth), ("pseudo", pseudo)):
        nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / f"{name}.nii.gz")
    (tmp_path / "split.json").write_text(json.dumps({"transferal": [{"image": "img.nii.gz", "label": "lab.nii.gz"}]}))
    folder = tmp_path / "pl"
    folder.mkdir()
    entry = {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "pseudo.nii.gz")}
    (folder / "datalist.json").write_text(json.dumps({"training": [entry]}))
    args = ["--dataset_dir", str(tmp_path), "--datalist", str(tmp_path / "split.json"), "--pseudo", "t", str(folder)]
    out = run([sys.executable, "tools/pseudo_label_quality.py", *args]).stdout
    assert "| t | 1 | 0.667 | 1.6% |" in out


def test_split_by_patient_keeps_frames_together_and_takes_a_given_test_list(tmp_path):
    cases = [{"image": f"./imagesTr/p{i:03d}_frame{f}.nii.gz"} for i in range(8) for f in (1, 2)]
    given_test = [{"image": "./imagesTr/p100_frame1.nii.gz"}]
    source = tmp_path / "dataset.json"
    source.write_text(json.dumps({"training": cases, "validation": given_test}))
    out = tmp_path / "split.json"
    args = ["--datalist", str(source), "--out", str(out), "--val", "2", "--test", "0"]
    run([sys.executable, "tools/split_datalist.py", *args, "--test_from", "validation", "--group", r"p\d+"])
    split = json.loads(out.read_text())
    patients = {key: {c["image"].split("/")[-1][:4] for c in split[key]} for key in ("training", "validation")}
    assert len(patients["validation"]) == 2 and len(split["validation"]) == 4
    assert not patients["training"] & patients["validation"] and len(split["training"]) == 12
    assert split["test"] == given_test
    result = run([sys.executable, "tools/split_datalist.py", *args, "--group", "nomatch"], expect_failure=True)
    assert "does not match image path ./imagesTr/p000_frame1.nii.gz" in result.stderr


def test_tumour_ct_datalists_from_kits19_and_lits_layouts(tmp_path):
    import nibabel as nib
    import numpy as np
    from monai.transforms import LoadImage, Orientation

    kits, lits = tmp_path / "kits", tmp_path / "lits"
    make = [sys.executable, "tools/make_synthetic_ct.py", "--cases", "4", "--size", "32", "--slices", "6"]
    run([*make, "--out", str(kits), "--layout", "kits19", "--no_tumour_every", "2"])
    run([*make, "--out", str(lits), "--layout", "lits"])
    (kits / "case_00300").mkdir()  # a KiTS19 test case: image only, skipped
    (kits / "case_00300" / "imaging.nii.gz").write_bytes(b"")
    assert [e["image"] for e in find_cases(kits, "kits19")] == [f"case_{i:05d}/imaging.nii.gz" for i in range(4)]
    assert find_cases(lits, "lits")[1] == {"image": "volume-1.nii", "label": "segmentation-1.nii"}
    out = tmp_path / "kits.json"
    tool = [sys.executable, "tools/tumour_ct_datalist.py", "--layout", "kits19", "--root", str(kits), "--out", str(out)]
    result = run([*tool, "--val", "1", "--test", "1"])
    assert "hold no label [2]: case_00001/segmentation.nii.gz, case_00003/segmentation.nii.gz" in result.stdout
    datalist = json.loads(out.read_text())
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [2, 1, 1]
    failed = run([*tool, "--val", "1", "--test", "1", "--target_labels", "5"], expect_failure=True)
    assert "none of the 4 label maps" in failed.stderr and "--target_labels" in failed.stderr
    # KiTS19 stores (z, y, x); reoriented to RAS the slices are on the last axis, as the bundle expects
    image = kits / "case_00000" / "imaging.nii.gz"
    assert nib.load(image).shape == (6, 32, 32)
    ras = Orientation("RAS")(LoadImage(image_only=True, ensure_channel_first=True)(image))
    assert ras.shape == (1, 32, 32, 6) and float(np.asarray(ras).min()) < -500


def fake_bundle(root: Path, config_extra: dict | None = None) -> Path:
    bundle = root / "tiny_bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "docs").mkdir()
    (bundle / "models" / "teacher").mkdir(parents=True)
    (bundle / "runs").mkdir()
    (bundle / "LICENSE").write_text("licence\n")
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "1.2.3"}))
    train = {"bundle_root": "$'.' if os.path.exists('configs/metadata.json') else 'bundles/x'", **(config_extra or {})}
    (bundle / "configs" / "train.json").write_text(json.dumps(train))
    (bundle / "configs" / "inference.json").write_text(json.dumps({"bundle_root": "bundles/x"}))
    (bundle / "docs" / "README.md").write_text("# tiny\n")
    (bundle / "models" / "model.pt").write_bytes(b"student")
    (bundle / "models" / "teacher" / "model.pt").write_bytes(b"teacher")
    (bundle / "runs" / "checkpoint.pt").write_bytes(b"not shipped")
    return bundle


def test_export_is_deterministic_self_contained_and_verify_refuses_altered_zips(tmp_path):
    import zipfile

    from export_bundle import export, verify

    bundle = fake_bundle(tmp_path)
    first, second = export(bundle, tmp_path / "a"), export(bundle, tmp_path / "b")
    assert first.name == "tiny_bundle_v1.2.3.zip" and first.read_bytes() == second.read_bytes()
    assert verify(first) == []
    with zipfile.ZipFile(first) as archive:
        names = set(archive.namelist())
        assert json.loads(archive.read("tiny_bundle/configs/train.json"))["bundle_root"] == "."
        manifest = archive.read("tiny_bundle/MANIFEST.sha256").decode()
    assert {"tiny_bundle/models/teacher/model.pt", "tiny_bundle/common/losses.py"} <= names
    assert not any("runs/" in n for n in names) and "models/model.pt" in manifest
    with zipfile.ZipFile(export(bundle, tmp_path / "c", with_teacher=False)) as archive:
        assert "tiny_bundle/models/model.pt" in archive.namelist()
        assert not any("models/teacher" in n for n in archive.namelist())
    # a config altered inside the zip (and the zip's checksum recomputed) is still caught by the manifest
    altered = tmp_path / "altered.zip"
    with zipfile.ZipFile(first) as src, zipfile.ZipFile(altered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b" " if item.filename.endswith("inference.json") else data)
    from export_bundle import sha256

    Path(f"{altered}.sha256").write_text(f"{sha256(altered.read_bytes())}  altered.zip\n")
    assert verify(altered) == ["altered: configs/inference.json"]
    damaged = bytearray(first.read_bytes())
    damaged[len(damaged) // 3] ^= 0xFF  # one byte damaged in transit
    first.write_bytes(bytes(damaged))
    assert "differs from tiny_bundle_v1.2.3.zip.sha256" in verify(first)[0]
    Path(f"{second}.sha256").unlink()
    assert verify(second) == ["no checksum file tiny_bundle_v1.2.3.zip.sha256 next to the zip"]
    result = run([sys.executable, "tools/export_bundle.py", "verify", str(altered)], expect_failure=True)
    assert "REFUSED" in result.stdout and "altered: configs/inference.json" in result.stdout


def test_export_refuses_configs_with_this_machines_paths(tmp_path):
    from export_bundle import export

    bundle = fake_bundle(tmp_path, {"dataset_dir": str(tmp_path / "data"), "other": "/workspace/data/x"})
    with pytest.raises(ValueError, match="holds absolute paths of this machine"):
        export(bundle, tmp_path / "out")


def test_compare_ddp_reads_the_last_best_metric_and_names_a_log_without_one():
    log = (
        "INFO - Key metric: val_mean_dice best value: 0.25 at epoch: 1\n"
        "INFO - Epoch[2] Metrics -- val_mean_dice: 0.3100\n"
        "INFO - Key metric: val_mean_dice best value: 0.31 at epoch: 2\n"
    )
    assert best_metric(log) == ("val_mean_dice", 0.31, 2)
    with pytest.raises(RuntimeError, match="no 'Key metric"):
        best_metric("Epoch: 1/1, Iter: 1/3 -- loss: 1.0")
