import gzip
import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from common.data import group_cases, load_datalist, read_nifti, select_fraction, split_cases
from tests.helpers import SHARED_DATA


def write_case(folder, name, shapes=((8, 8, 8), (8, 8, 8)), label_shape=(8, 8, 8)):
    files = []
    for i, shape in enumerate(shapes):
        path = os.path.join(folder, f"{name}_m{i}.nii.gz")
        nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), path)
        files.append(os.path.basename(path))
    nib.save(nib.Nifti1Image(np.zeros(label_shape, np.uint8), np.eye(4)), os.path.join(folder, f"{name}_seg.nii.gz"))
    return {"image": files, "label": f"{name}_seg.nii.gz"}


def write_datalist(folder, items, key="training"):
    path = os.path.join(folder, "dataset.json")
    with open(path, "w") as f:
        json.dump({key: items}, f)
    return path


def test_valid_datalist_loads_with_absolute_paths(tmp_path):
    path = write_datalist(tmp_path, [write_case(tmp_path, "a"), write_case(tmp_path, "b")])
    items = load_datalist(path, base_dir=str(tmp_path), image_channels=2)
    assert len(items) == 2 and os.path.isabs(items[0]["image"][0])


def test_missing_modality_file_is_named(tmp_path):
    path = write_datalist(tmp_path, [write_case(tmp_path, "a")])
    os.remove(tmp_path / "a_m1.nii.gz")
    with pytest.raises(FileNotFoundError, match="a_m1.nii.gz"):
        load_datalist(path, base_dir=str(tmp_path), image_channels=2)


def test_modality_count_is_checked(tmp_path):
    path = write_datalist(tmp_path, [write_case(tmp_path, "a", shapes=((8, 8, 8),))])
    with pytest.raises(ValueError, match=r"1 image channel\(s\) \(a_m0.nii.gz 1\), expected 2"):
        load_datalist(path, base_dir=str(tmp_path), image_channels=2)


def test_modalities_of_different_shapes_are_named(tmp_path):
    path = write_datalist(tmp_path, [write_case(tmp_path, "a", shapes=((8, 8, 8), (8, 8, 9)))])
    with pytest.raises(ValueError, match=r"shapes differ: a_m0.nii.gz \(8, 8, 8\), a_m1.nii.gz \(8, 8, 9\)"):
        load_datalist(path, base_dir=str(tmp_path))


def test_corrupt_file_is_named(tmp_path):
    path = write_datalist(tmp_path, [write_case(tmp_path, "a", shapes=((32, 32, 32), (32, 32, 32)))])
    target = tmp_path / "a_m0.nii.gz"
    raw = gzip.decompress(target.read_bytes())
    target.write_bytes(gzip.compress(raw[: len(raw) // 2]))  # a whole gzip of half an image
    with pytest.raises(ValueError, match="image file .*a_m0.nii.gz is truncated"):
        load_datalist(path, base_dir=str(tmp_path))
    target.write_bytes(gzip.compress(raw)[:-100])  # a cut download: found from the file's end, unread
    with pytest.raises(ValueError, match="image file .*a_m0.nii.gz is truncated"):
        load_datalist(path, base_dir=str(tmp_path), read_voxels=False)
    uncompressed = tmp_path / "a_m0.nii"
    uncompressed.write_bytes(raw[:-100])
    with pytest.raises(ValueError, match="image file .*a_m0.nii is truncated"):
        read_nifti(str(uncompressed), read_voxels=False)


@pytest.mark.parametrize(
    "voxels, affine, message",
    [
        (np.zeros((8, 8), np.float32), np.eye(4), r"has shape \(8, 8\): this bundle reads 3-D volumes"),
        (np.zeros((8, 8, 8), np.float32), np.diag([1e3, 1e3, 1e3, 1]), r"has voxel spacing \(1000.0, 1000.0, 1000.0\)"),
        (
            np.zeros((8, 8, 8), np.float32),
            np.diag([1e-3, 1e-3, 1e-3, 1]),
            r"has voxel spacing \(0.001, 0.001, 0.001\) mm, outside the plausible \(0.05, 50.0\) mm",
        ),
        (np.full((8, 8, 8), np.nan, np.float32), np.eye(4), r"holds 512 NaN or infinite voxel\(s\)"),
    ],
    ids=["2-D", "metres", "microns", "NaN"],
)
def test_a_bad_image_file_is_named_with_what_is_wrong(tmp_path, voxels, affine, message):
    path = str(tmp_path / "bad.nii.gz")
    nib.save(nib.Nifti1Image(voxels, affine), path)
    with pytest.raises(ValueError, match=f"image file {path} " + message):
        read_nifti(path, read_voxels=True)


def test_a_four_dimensional_file_counts_its_channels(tmp_path):
    case = write_case(tmp_path, "a", shapes=((8, 8, 8, 3),))
    path = write_datalist(tmp_path, [case])
    assert read_nifti(str(tmp_path / "a_m0.nii.gz"), read_voxels=False).channels == 3
    assert load_datalist(path, base_dir=str(tmp_path), image_channels=3)
    with pytest.raises(ValueError, match=r"3 image channel\(s\) \(a_m0.nii.gz 3\), expected 1"):
        load_datalist(path, base_dir=str(tmp_path), image_channels=1)


def test_a_label_on_another_grid_than_its_image_is_named(tmp_path):
    path = write_datalist(tmp_path, [write_case(tmp_path, "a", shapes=((8, 8, 8),))])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.diag([2.0, 2, 2, 1])), tmp_path / "a_seg.nii.gz")
    expected = r"grids differ: a_seg.nii.gz spacing \(2.0, 2.0, 2.0\) .*, against a_m0.nii.gz spacing \(1.0, 1.0, 1.0\)"
    with pytest.raises(ValueError, match=expected):
        load_datalist(path, base_dir=str(tmp_path))
    shifted = np.eye(4)
    shifted[:3, 3] = 0.05  # a twentieth of a voxel: rounding in a writer, not another grid
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), shifted), tmp_path / "a_seg.nii.gz")
    assert load_datalist(path, base_dir=str(tmp_path))


def test_empty_list_and_missing_datalist(tmp_path):
    with pytest.raises(ValueError, match="no cases"):
        load_datalist(write_datalist(tmp_path, []), base_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="datalist not found"):
        load_datalist(str(tmp_path / "nothing.json"))


@pytest.mark.skipif(not (SHARED_DATA / "brats_subset").is_dir(), reason="../shared/data/brats_subset is absent")
def test_real_brats_subset_datalist_passes_the_checks():
    src = SHARED_DATA / "brats_subset"
    items = load_datalist(str(src / "dataset.json"), base_dir=str(src), image_channels=2, read_voxels=False)
    assert len(items) == 16


def test_label_values_outside_the_classes_are_named(tmp_path):
    label = np.zeros((4, 4, 4), np.uint8)
    label[0, 0, 0], label[1, 1, 1] = 255, 1
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "lab.nii.gz")
    (tmp_path / "d.json").write_text(json.dumps({"training": [{"image": "img.nii.gz", "label": "lab.nii.gz"}]}))
    args = (str(tmp_path / "d.json"), "training", str(tmp_path))
    assert load_datalist(*args, label_classes=2, ignore_value=255)
    with pytest.raises(ValueError, match=r"lab.nii.gz holds values \[255\] outside the 2 classes"):
        load_datalist(*args, label_classes=2)
    label[2, 2, 2] = 3
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "lab.nii.gz")
    with pytest.raises(ValueError, match=r"values \[3\]"):
        load_datalist(*args, label_classes=2, ignore_value=255)


def test_required_label_missing_from_every_case_is_an_error_and_from_some_a_warning(tmp_path, caplog):
    items = []
    for i, value in enumerate((0, 1, 2)):
        label = np.zeros((4, 4, 2), np.uint8)
        label[0, 0, 0] = value
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), tmp_path / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / f"c{i}_seg.nii.gz")
        items.append({"image": f"c{i}.nii.gz", "label": f"c{i}_seg.nii.gz"})
    datalist = write_datalist(tmp_path, items)
    with pytest.raises(ValueError, match=r"no label map of the 3 cases .* holds label value\(s\) \[7\]"):
        load_datalist(datalist, base_dir=str(tmp_path), required_labels=[7])
    with caplog.at_level("WARNING"):
        assert len(load_datalist(datalist, base_dir=str(tmp_path), required_labels=[2])) == 3
    assert "2 of 3 cases under 'training' hold no label [2]: c0_seg.nii.gz, c1_seg.nii.gz" in caplog.text


def test_select_fraction_draws_whole_cases_reproducibly_and_rejects_bad_fractions(caplog):
    items = [{"image": f"./imagesTr/patient{p:03d}_frame{f}.nii.gz"} for p in range(10) for f in (1, 2)]
    half = select_fraction(items, 0.5, seed=3, group=r"patient\d+")
    assert len(half) == 10 and half == select_fraction(items, 0.5, seed=3, group=r"patient\d+")
    patients = {item["image"].split("_")[0] for item in half}
    assert len(patients) == 5  # both frames of every chosen patient
    assert [items.index(item) for item in half] == sorted(items.index(item) for item in half)
    assert select_fraction(items, 0.5, seed=4, group=r"patient\d+") != half
    assert len(select_fraction(items, 0.5, seed=3)) == 10  # without grouping each item is a case
    assert select_fraction(items, 1.0, group=r"patient\d+") == items
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"data_fraction must be in \(0, 1\]"):
            select_fraction(items, bad)
    with pytest.raises(ValueError, match="data_fraction 0.01 of 10 cases keeps none; use at least 0.1"):
        select_fraction(items, 0.01, group=r"patient\d+")
    with pytest.raises(ValueError, match="does not match image path"):
        select_fraction(items, 0.5, group=r"case_\d+")


def test_split_cases_is_seeded_disjoint_complete_and_keeps_the_input_order():
    cases = list(range(16))
    split = split_cases(cases, {"test": 4, "validation": 2}, seed=0)
    assert split == split_cases(cases, {"test": 4, "validation": 2}, seed=0)
    assert split != split_cases(cases, {"test": 4, "validation": 2}, seed=1)
    assert list(split) == ["training", "test", "validation"]
    assert [len(v) for v in split.values()] == [10, 4, 2]
    assert sorted(c for chosen in split.values() for c in chosen) == cases
    assert all(chosen == sorted(chosen) for chosen in split.values())
    assert split_cases(cases, {"all": 16}, seed=0) == {"training": [], "all": cases}
    with pytest.raises(ValueError, match="cannot take"):
        split_cases(cases, {"test": 17}, seed=0)


def test_group_cases_keeps_a_patient_together_in_first_seen_order():
    items = [{"image": f"p{p}_f{f}.nii.gz"} for p in (3, 1) for f in (1, 2)]
    assert group_cases(items, r"p\d") == [items[:2], items[2:]]
    assert group_cases(items) == [[item] for item in items]


def test_select_fraction_keeps_the_cases_that_the_one_seeded_split_draws():
    items = [{"image": f"./imagesTr/patient{p:03d}_frame{f}.nii.gz"} for p in range(10) for f in (1, 2)]
    drawn = split_cases(group_cases(items, r"patient\d+"), {"kept": 5}, seed=3)["kept"]
    assert select_fraction(items, 0.5, seed=3, group=r"patient\d+") == [item for case in drawn for item in case]


def test_the_split_example_in_the_docstring_holds():
    import doctest

    import common.data

    results = doctest.testmod(common.data)
    assert results.attempted == 1 and results.failed == 0


def test_split_labelled_keeps_a_seeded_fraction_of_labels_and_never_points_at_the_others():
    from common.data import BlankUnlabelledd, split_labelled

    items = [{"image": [f"p{p}_flair.nii.gz", f"p{p}_t1.nii.gz"], "label": f"p{p}_seg.nii.gz"} for p in range(8)]
    items.append({"image": ["new_flair.nii.gz", "new_t1.nii.gz"]})  # an image that never had a label
    marked = split_labelled(items, 0.5, seed=1)
    labelled = [m for m in marked if m["labelled"] == 1]
    assert labelled == [{**item, "labelled": 1} for item in select_fraction(items[:8], 0.5, seed=1)]
    assert len(labelled) == 4 and len(marked) == 9
    for item in marked:
        if item["labelled"] == 0:
            assert item["label"] == item["image"][0] and not item["label"].endswith("_seg.nii.gz")
    assert split_labelled(items[:8], 1.0) == items[:8]  # fully labelled: the ordinary list, no flag
    with pytest.raises(ValueError, match=r"label_fraction must be in \(0, 1\]"):
        split_labelled(items, 0.0)
    blank = BlankUnlabelledd("label")
    stand_in = torch.full((1, 2, 2), 7.0)
    assert blank({"label": stand_in, "labelled": 0})["label"].abs().sum() == 0
    assert torch.equal(blank({"label": stand_in, "labelled": 1})["label"], stand_in)
    assert torch.equal(blank({"label": stand_in})["label"], stand_in)  # validation items carry no flag


def test_inference_checks_name_the_file_before_and_after_loading(tmp_path):
    from monai.transforms import LoadImaged

    from common.data import CheckFinited, CheckImageFiled

    good, flair, bad = (str(tmp_path / f"{n}.nii.gz") for n in ("good", "flair", "nan"))
    for path in (good, flair):
        nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), path)
    voxels = np.ones((8, 8, 8), np.float32)
    voxels[0, 0, :2] = [np.nan, np.inf]
    nib.save(nib.Nifti1Image(voxels, np.eye(4)), bad)

    assert CheckImageFiled(channels=1)({"image": good}) == {"image": good}
    assert CheckImageFiled(channels=2)({"image": [flair, good]})["image"] == [flair, good]
    with pytest.raises(ValueError, match=rf"with 2 channel\(s\) \({flair} 1, {good} 1\): this network reads 1"):
        CheckImageFiled(channels=1)({"image": [flair, good]})
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        CheckImageFiled()({"image": str(tmp_path / "missing.nii.gz")})

    loaded = LoadImaged("image", image_only=True)({"image": good})
    assert CheckFinited("image")(loaded)["image"] is loaded["image"]
    with pytest.raises(ValueError, match=f"image file {bad} holds 2 NaN or infinite voxel"):
        CheckFinited("image")(LoadImaged("image", image_only=True)({"image": bad}))
