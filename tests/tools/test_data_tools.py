"""``tools.data``: phantoms and datalists, run in this process as ``main(argv)``."""

import json

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage, Orientation

from tools.data import nnunet_raw, split_datalist, synthetic_brats, synthetic_cardiac, synthetic_ct, tumour_ct_datalist
from tools.data.brats_datalist import brats_cases
from tools.data.shapes import ellipsoid


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


def test_split_is_seeded_disjoint_complete_and_leaves_cases_for_training():
    cases = [{"image": f"c{i}"} for i in range(20)]
    split = split_datalist.split_datalist(cases, 2, 4, seed=0, extra={"transferal": 6, "finetune": 2})
    assert split == split_datalist.split_datalist(cases, 2, 4, seed=0, extra={"transferal": 6, "finetune": 2})
    assert {k: len(v) for k, v in split.items()} == {
        "training": 6,
        "test": 4,
        "validation": 2,
        "transferal": 6,
        "finetune": 2,
    }
    assert sorted(c["image"] for items in split.values() for c in items) == sorted(c["image"] for c in cases)
    assert split["test"] == split_datalist.split_datalist(cases, 2, 4, seed=0)["test"]  # extra lists leave test alone
    assert split_datalist.split_datalist(cases, 2, 4, seed=1)["test"] != split["test"]
    with pytest.raises(ValueError, match="out of 20 and leave some for training"):
        split_datalist.split_datalist(cases, 10, 10, seed=0)


def test_split_by_patient_keeps_frames_together_and_takes_a_given_test_list(tmp_path, capsys):
    cases = [{"image": f"./imagesTr/p{i:03d}_frame{f}.nii.gz"} for i in range(8) for f in (1, 2)]
    given_test = [{"image": "./imagesTr/p100_frame1.nii.gz"}]
    source = tmp_path / "dataset.json"
    source.write_text(json.dumps({"training": cases, "validation": given_test}))
    out = tmp_path / "split.json"
    args = ["--datalist", str(source), "--out", str(out), "--val", "2", "--test", "0"]
    split_datalist.main([*args, "--test_from", "validation", "--group", r"p\d+"])
    split = json.loads(out.read_text())
    patients = {key: {c["image"].split("/")[-1][:4] for c in split[key]} for key in ("training", "validation")}
    assert len(patients["validation"]) == 2 and len(split["validation"]) == 4
    assert not patients["training"] & patients["validation"] and len(split["training"]) == 12
    assert split["test"] == given_test
    with pytest.raises(SystemExit):
        split_datalist.main([*args, "--group", "nomatch"])
    assert "does not match image path ./imagesTr/p000_frame1.nii.gz" in capsys.readouterr().err


def test_synthetic_brain_phantoms_are_seeded_and_the_lesion_is_faint_in_t1(tmp_path):
    for name in ("a", "b"):
        synthetic_brats.main(
            ["--out", str(tmp_path / name), "--cases", "3", "--size", "24", "--val", "1", "--test", "1", "--seed", "3"]
        )
    datalist = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [1, 1, 1]
    case = datalist["training"][0]
    flair, t1 = (np.asarray(nib.load(tmp_path / "a" / f).dataobj) for f in case["image"])
    np.testing.assert_array_equal(flair, np.asarray(nib.load(tmp_path / "b" / case["image"][0]).dataobj))
    label = np.asarray(nib.load(tmp_path / "a" / case["label"]).dataobj) > 0
    head = (flair > 30) & ~label
    contrast = [abs(img[label].mean() - img[head].mean()) / img[head].std() for img in (flair, t1)]
    assert contrast[0] > 2 * contrast[1] > 0


def test_synthetic_cardiac_phantoms_hold_the_four_acdc_classes_per_frame(tmp_path):
    synthetic_cardiac.main(
        ["--out", str(tmp_path), "--patients", "2", "--validation", "1", "--size", "48", "--slices", "3"]
    )
    datalist = json.loads((tmp_path / "dataset.json").read_text())
    assert len(datalist["training"]) == len(datalist["validation"]) == 2  # two frames per patient
    label = np.asarray(nib.load(tmp_path / datalist["training"][0]["label"]).dataobj)
    assert label.shape == (48, 48, 3) and set(np.unique(label).tolist()) == {0, 1, 2, 3}


def test_ellipsoid_masks_hand_counted_voxels():
    grid = np.stack(np.meshgrid(np.arange(5), np.arange(5), indexing="ij")).astype(float)
    disc = ellipsoid(grid, np.array([2.0, 2.0]), np.array([1.0, 1.0]))
    assert disc.sum() == 5 and disc[2, 2] and disc[1, 2] and not disc[1, 1]  # the centre and its 4 neighbours
    wide = ellipsoid(grid, np.array([2.0, 2.0]), np.array([1.0, 2.0]))  # radius 2 along the second axis
    assert wide.sum() == 7 and wide[2, 0] and wide[2, 4] and not wide[0, 2]


def test_tumour_ct_datalists_from_kits19_and_lits_layouts(tmp_path, capsys):
    kits, lits = tmp_path / "kits", tmp_path / "lits"
    make = ["--cases", "4", "--size", "32", "--slices", "6"]
    synthetic_ct.main([*make, "--out", str(kits), "--layout", "kits19", "--no_tumour_every", "2"])
    synthetic_ct.main([*make, "--out", str(lits), "--layout", "lits"])
    (kits / "case_00300").mkdir()  # a KiTS19 test case: image only, skipped
    (kits / "case_00300" / "imaging.nii.gz").write_bytes(b"")
    cases = tumour_ct_datalist.find_cases(kits, "kits19")
    assert [e["image"] for e in cases] == [f"case_{i:05d}/imaging.nii.gz" for i in range(4)]
    assert tumour_ct_datalist.find_cases(lits, "lits")[1] == {"image": "volume-1.nii", "label": "segmentation-1.nii"}
    out = tmp_path / "kits.json"
    tool = ["--layout", "kits19", "--root", str(kits), "--out", str(out), "--val", "1", "--test", "1"]
    tumour_ct_datalist.main(tool)
    assert (
        "hold no label [2]: case_00001/segmentation.nii.gz, case_00003/segmentation.nii.gz" in capsys.readouterr().out
    )
    datalist = json.loads(out.read_text())
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [2, 1, 1]
    with pytest.raises(SystemExit, match="none of the 4 label maps.*--target_labels"):
        tumour_ct_datalist.main([*tool, "--target_labels", "5"])
    # KiTS19 stores (z, y, x); reoriented to RAS the slices are on the last axis, as the bundle expects
    image = kits / "case_00000" / "imaging.nii.gz"
    assert nib.load(image).shape == (6, 32, 32)
    ras = Orientation("RAS")(LoadImage(image_only=True, ensure_channel_first=True)(image))
    assert ras.shape == (1, 32, 32, 6) and float(np.asarray(ras).min()) < -500


def test_cross_validation_folds_test_every_case_once_and_keep_validation_apart(tmp_path):
    cases = [{"image": f"c{i:02d}"} for i in range(10)]
    folds = [split_datalist.cross_validation_fold(cases, 4, fold, 2, seed=0) for fold in range(4)]
    tested = [c["image"] for f in folds for c in f["test"]]
    assert sorted(tested) == [c["image"] for c in cases]  # each case tested exactly once
    assert [len(f["test"]) for f in folds] == [3, 3, 2, 2]
    for f in folds:
        names = [[c["image"] for c in f[key]] for key in ("training", "validation", "test")]
        assert len(names[1]) == 2 and sum(map(len, names)) == 10 and len(set().union(*map(set, names))) == 10
    assert folds[1] == split_datalist.cross_validation_fold(cases, 4, 1, 2, seed=0)
    assert folds[1]["test"] != split_datalist.cross_validation_fold(cases, 4, 1, 2, seed=1)["test"]
    with pytest.raises(ValueError, match="fold 4 of 4 folds"):
        split_datalist.cross_validation_fold(cases, 4, 4, 2, seed=0)
    source = tmp_path / "dataset.json"
    source.write_text(json.dumps({"training": cases}))
    split_datalist.main(
        ["--datalist", str(source), "--out", str(tmp_path / "f2.json"), "--val", "2", "--folds", "4", "--fold", "2"]
    )
    assert json.loads((tmp_path / "f2.json").read_text())["test"] == folds[2]["test"]


def test_only_keeps_the_items_of_one_kind(tmp_path, capsys):
    items = [{"image": f"c{i}", "t1_kind": "T1" if i < 6 else "T1c"} for i in range(9)]
    source = tmp_path / "dataset.json"
    source.write_text(json.dumps({"training": items}))
    out = tmp_path / "native.json"
    split_datalist.main(
        ["--datalist", str(source), "--out", str(out), "--val", "1", "--test", "1", "--only", "t1_kind=T1"]
    )
    split = json.loads(out.read_text())
    assert sorted(c["image"] for key in ("training", "validation", "test") for c in split[key]) == [
        f"c{i}" for i in range(6)
    ]
    with pytest.raises(SystemExit):
        split_datalist.main(
            ["--datalist", str(source), "--out", str(out), "--val", "1", "--test", "1", "--only", "t1_kind=T2"]
        )
    assert "no item of 'training' has t1_kind = 'T2'" in capsys.readouterr().err


def test_image_file_keeps_one_modality_of_each_item_and_names_a_wrong_index(tmp_path, capsys):
    items = [{"image": [f"c{i}_flair", f"c{i}_t1"], "label": f"c{i}_seg"} for i in range(6)]
    source = tmp_path / "dataset.json"
    source.write_text(json.dumps({"training": items}))
    out = tmp_path / "flair.json"
    args = ["--datalist", str(source), "--out", str(out), "--val", "1", "--test", "1"]
    split_datalist.main([*args, "--image_file", "0"])
    split = json.loads(out.read_text())
    kept = sorted((c["image"], c["label"]) for key in ("training", "validation", "test") for c in split[key])
    assert kept == [(f"c{i}_flair", f"c{i}_seg") for i in range(6)]
    with pytest.raises(SystemExit):
        split_datalist.main([*args, "--image_file", "2"])
    assert "--image_file 2: item c0 has 2 image file(s)" in capsys.readouterr().err


def test_synthetic_brain_phantoms_make_t1_distractors_fainter_by_the_cue_only(tmp_path):
    for name, cue in (("plain", "0"), ("cue", "0.3")):
        args = ["--out", str(tmp_path / name), "--cases", "3", "--size", "24", "--val", "1", "--test", "1"]
        synthetic_brats.main([*args, "--t1_cue", cue])
    case = json.loads((tmp_path / "cue" / "dataset.json").read_text())["training"][0]
    plain, cued = ({f: np.asarray(nib.load(tmp_path / n / f).dataobj) for f in case["image"]} for n in ("plain", "cue"))
    flair, t1 = case["image"]
    np.testing.assert_array_equal(plain[flair], cued[flair])  # the same draws: only the distractors change
    lift = cued[t1] - plain[t1]  # 0.3 of the x100 intensity scale on the distractors, smoothed
    assert lift.min() > -1e-3 and 10 < lift.max() <= 30.001
    label = np.asarray(nib.load(tmp_path / "cue" / case["label"]).dataobj) > 0
    assert lift[label].mean() < 0.1 * lift[lift > 1].mean()


def write_dicom_series(voxels: np.ndarray, folder, spacing=(0.7, 0.7, 2.0), origin=(-10.0, 20.0, 30.0)) -> None:
    """``voxels`` (i, j, k order) as a DICOM series of axial slices, one file per slice named as
    IRCAD names them, each with its position, orientation and pixel spacing (LPS, as DICOM is)."""
    import locale

    folder.mkdir(parents=True)
    saved_locale = locale.setlocale(locale.LC_ALL)  # GDCM's writer sets the C locale for the whole process,
    try:  # after which Python reads text files as ASCII: every later test in this worker would fail
        _write_slices(voxels, folder, spacing, origin)
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)


def _write_slices(voxels: np.ndarray, folder, spacing, origin) -> None:
    import itk

    io = itk.GDCMImageIO.New()
    io.KeepOriginalUIDOn()
    for k in range(voxels.shape[2]):
        slice_ = itk.image_from_array(np.ascontiguousarray(voxels[:, :, k].T).astype(np.int16))
        slice_.SetSpacing(spacing[:2])  # the writer takes the pixel spacing from the image
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.1",
            "0020|0013": str(k + 1),
            "0020|0032": f"{origin[0]}\\{origin[1]}\\{origin[2] + k * spacing[2]}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
            "0018|0050": str(spacing[2]),
        }
        dictionary = slice_.GetMetaDataDictionary()
        for tag, value in tags.items():
            dictionary[tag] = value
        io.SetMetaDataDictionary(dictionary)
        writer = itk.ImageFileWriter[type(slice_)].New(Input=slice_, FileName=str(folder / f"image_{k}"), ImageIO=io)
        writer.Update()


def test_ircad_patients_become_lits_volumes_with_liver_and_tumour_on_the_ct_grid(tmp_path, capsys):
    from tools.data import ircad_to_lits

    patient = tmp_path / "3Dircadb1.7"
    ct = np.full((12, 10, 4), -1000, np.int16)
    ct[2:8, 2:8] = 60
    liver, tumour_a, tumour_b = (np.zeros(ct.shape, np.int16) for _ in range(3))
    liver[2:8, 2:8] = 255
    tumour_a[3, 3, 1] = 255
    tumour_b[9, 8, 3] = 255  # outside the liver mask: still a tumour
    write_dicom_series(ct, patient / "PATIENT_DICOM")
    for name, mask in (("liver", liver), ("livertumor01", tumour_a), ("livertumor02", tumour_b)):
        write_dicom_series(mask, patient / "MASKS_DICOM" / name)

    ircad_to_lits.main([str(patient), "--out", str(tmp_path / "lits")])
    assert "volume-7.nii.gz, segmentation-7.nii.gz: liver 144 voxels, 2 tumour(s) of 2" in capsys.readouterr().out
    volume, segmentation = (
        nib.load(tmp_path / "lits" / "volume-7.nii.gz"),
        nib.load(tmp_path / "lits" / "segmentation-7.nii.gz"),
    )
    np.testing.assert_array_equal(np.asarray(volume.dataobj), ct)
    expected = np.where(liver > 0, 1, 0)
    expected[3, 3, 1] = expected[9, 8, 3] = 2
    np.testing.assert_array_equal(np.asarray(segmentation.dataobj), expected)
    # DICOM's LPS corner (-10, 20, 30) is RAS (10, -20, 30); i runs to the left, j to the back
    np.testing.assert_allclose(
        volume.affine, [[-0.7, 0, 0, 10], [0, -0.7, 0, -20], [0, 0, 2, 30], [0, 0, 0, 1]], atol=1e-4
    )
    np.testing.assert_allclose(segmentation.affine, volume.affine)
    assert tumour_ct_datalist.find_cases(tmp_path / "lits", "lits") == [
        {"image": "volume-7.nii.gz", "label": "segmentation-7.nii.gz"}
    ]

    (patient / "MASKS_DICOM" / "liver" / "image_3").unlink()  # a mask series one slice short
    with pytest.raises(ValueError, match=r"mask .*liver has shape \(12, 10, 3\), the CT \(12, 10, 4\)"):
        ircad_to_lits.main([str(patient), "--out", str(tmp_path / "lits")])


def test_nnunet_raw_dataset_links_the_listed_cases_and_names_what_is_wrong(tmp_path, capsys):
    for case in ("a", "b", "c"):
        touch(tmp_path / "data" / "images" / f"la_{case}.nii.gz")
        touch(tmp_path / "data" / "labels" / f"la_{case}.nii.gz")
    items = [{"image": f"images/la_{c}.nii.gz", "label": f"labels/la_{c}.nii.gz"} for c in ("a", "b", "c")]
    split = {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "left_atrium"}}
    split |= {"training": items[:1], "segresnet_training": items[1:2], "test": items[2:]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    out = tmp_path / "raw" / "Dataset101_LA"
    args = ["--datalist", str(tmp_path / "split.json"), "--dataset_dir", str(tmp_path / "data"), "--out", str(out)]
    nnunet_raw.main([*args, "--key", "training", "--key", "segresnet_training"])
    assert json.loads((out / "dataset.json").read_text()) == {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "left_atrium": 1},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["la_a_0000.nii.gz", "la_b_0000.nii.gz"]
    assert (out / "labelsTr" / "la_b.nii.gz").resolve() == tmp_path / "data" / "labels" / "la_b.nii.gz"
    with pytest.raises(SystemExit):
        nnunet_raw.main([*args, "--key", "training", "--key", "test"])  # another dataset in the same folder
    assert "already holds another dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        nnunet_raw.main([*args, "--key", "training", "--key", "validation"])
    assert (
        "has no list ['validation']; its lists: ['training', 'segresnet_training', 'test']" in capsys.readouterr().err
    )
    (tmp_path / "data" / "labels" / "la_c.nii.gz").unlink()
    with pytest.raises(SystemExit):
        nnunet_raw.main(
            ["--datalist", str(tmp_path / "split.json"), "--dataset_dir", str(tmp_path / "data")]
            + ["--out", str(tmp_path / "other"), "--key", "test"]
        )
    assert "la_c.nii.gz not found" in capsys.readouterr().err
