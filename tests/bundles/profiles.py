"""What the contract test needs to know of each bundle: its tiny phantom data, the overrides that
make a run take seconds, how its teachers are made, which loss terms and metrics it must report,
and where its inference and MONAI Label inputs are. A new bundle adds one profile here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import run_bundle
from tools.data import split_datalist, synthetic_brats, synthetic_cardiac, synthetic_ct


def brats_phantoms(folder: Path) -> Path:
    """Ten two-modality phantoms of 32^3 (6 training, 2 validation, 2 test), BraTS naming."""
    synthetic_brats.main(["--out", str(folder), "--cases", "10", "--size", "32", "--val", "2", "--test", "2"])
    return folder


def single_channel_phantoms(folder: Path) -> Path:
    """The BraTS phantoms' first modality as single-channel cases, in two datalists: ``dataset.json``
    split as the transfer bundle expects (teacher training, transferal with labels unused,
    fine-tuning, validation, test, and an empty list) and ``plain.json`` (training, validation, test)."""
    source_dir = brats_phantoms(folder / "brats")
    source = json.loads((source_dir / "dataset.json").read_text())

    def single(items: list[dict]) -> list[dict]:
        return [{"image": str(source_dir / i["image"][0]), "label": str(source_dir / i["label"])} for i in items]

    train, validation, test = single(source["training"]), single(source["validation"]), single(source["test"])
    transfer = {
        "training": train[:3],
        "transferal": train[3:5],
        "finetune": train[5:],
        "validation": validation,
        "test": test,
        "empty": [],
    }
    (folder / "dataset.json").write_text(json.dumps(transfer))
    (folder / "plain.json").write_text(json.dumps({"training": train, "validation": validation, "test": test}))
    return folder


def cardiac_phantoms(folder: Path) -> Path:
    """Eight phantom patients (two frames each, 64x64x6): the source's 2 validation patients become
    the test list, 2 training patients the validation list (by patient), 4 patients train."""
    synthetic_cardiac.main(["--out", str(folder), "--patients", "8", "--validation", "2"])
    split = ["--val", "2", "--test", "0", "--test_from", "validation", "--group", r"patient\d+"]
    split_datalist.main(["--datalist", str(folder / "dataset.json"), "--out", str(folder / "datalist.json"), *split])
    return folder


def kits_phantoms(folder: Path) -> Path:
    """Nine 64x64x6 CT phantoms stored as KiTS19 does (slice axis first), cases 3 and 7 without
    tumour; validation and test cases all hold a tumour, so every test Dice is a number."""
    make = ["--out", str(folder), "--layout", "kits19", "--cases", "9", "--size", "64", "--slices", "6"]
    synthetic_ct.main([*make, "--no_tumour_every", "4", "--seed", "3"])

    def cases(*numbers: int) -> list[dict]:
        return [
            {"image": f"case_{n:05d}/imaging.nii.gz", "label": f"case_{n:05d}/segmentation.nii.gz"} for n in numbers
        ]

    datalist = {"training": cases(0, 1, 2, 3, 7), "validation": cases(4, 8), "test": cases(5, 6)}
    (folder / "datalist.json").write_text(json.dumps(datalist))
    return folder


@dataclass(frozen=True)
class Profile:
    """One bundle as the contract test sees it."""

    name: str
    data: str  # the phantom set (a key of DATA)
    tiny: dict  # overrides that make every training and evaluation run take seconds
    run_name: str  # train.json's run folder under runs/
    kd_terms: frozenset[str]  # the loss_<name> terms train.json logs (empty: one plain loss)
    baseline: str  # the overlay that trains the same student without distillation
    baseline_terms: frozenset[str]
    baseline_model: str  # where the baseline overlay saves the student, under models/
    metrics: tuple[str, ...]  # evaluate.json's per-case metric files (<metric>_raw.csv)
    test_cases: int  # rows of each of them
    inference: dict  # overrides of inference.json; a relative dataset_dir is taken inside the data folder
    inference_outputs: int  # label maps inference.json writes
    adapters: frozenset[str] = field(default_factory=frozenset)  # loss terms owning learnable adapters
    teacher_runs: tuple[tuple[tuple[str, ...], dict], ...] = ()  # (configs, extra overrides) per teacher

    def overrides(self, data: Path, **extra: object) -> dict:
        return {"dataset_dir": str(data), **self.tiny, **extra}

    def prepare(self, bundle: Path, data: Path) -> list[str]:
        """Train the teachers (and, for the transfer bundle, annotate the transferal images); their logs."""
        logs = [
            run_bundle(bundle, list(configs), **self.overrides(data, **extra)) for configs, extra in self.teacher_runs
        ]
        if self.name == "agnostic_transfer_la_mri":
            logs.append(run_bundle(bundle, ["train.json", "annotate.json"], **self.overrides(data, **ANNOTATE)))
        return logs

    def prepare_installed(self, site: Path, data: Path) -> None:
        """What an installed bundle needs before its own training: the transfer bundle's pseudo labels
        (teachers are shipped, labels are not)."""
        if self.name == "agnostic_transfer_la_mri":
            run_bundle(site, ["train.json", "annotate.json"], **self.overrides(data))

    def monailabel_cases(self, data: Path) -> tuple[Path, list[tuple[Path, Path]]]:
        """The image MONAI Label infers on and the (image, label) studies it trains on."""
        if self.data == "brats":  # one file per study: FLAIR and T1 stacked, the channels training selects from
            import nibabel as nib
            import numpy as np

            cases = []
            for case in sorted(p for p in data.iterdir() if p.is_dir())[:4]:
                modalities = [nib.load(case / f"{case.name}_{m}.nii.gz") for m in ("flair", "t1")]
                stacked = np.stack([np.asarray(m.dataobj) for m in modalities], axis=-1)
                nib.save(nib.Nifti1Image(stacked, modalities[0].affine), data / f"{case.name}_flair_t1.nii.gz")
                cases.append((data / f"{case.name}_flair_t1.nii.gz", case / f"{case.name}_seg.nii.gz"))
            return cases[0][1].parent / cases[0][1].name.replace("_seg", "_t1"), cases
        datalist = json.loads((data / DATALISTS[self.data]).read_text())
        cases = [(data / c["image"], data / c["label"]) for c in datalist["training"][:4]]
        return data / datalist["test"][0]["image"], cases


ANNOTATE = {"fusion": "vote", "confidence_threshold": 0.6, "save_probabilities": True}
DATA = {"brats": brats_phantoms, "single": single_channel_phantoms, "cardiac": cardiac_phantoms, "kits": kits_phantoms}
DATALISTS = {"single": "plain.json", "cardiac": "datalist.json", "kits": "datalist.json"}
TINY_3D = {"epochs": 1, "num_workers": 0, "roi_size": [32, 32, 32]}
HLFD_TERMS = frozenset(
    {
        "flfd_mid_to_e1",
        "flfd_deep_to_e2",
        "flfd_deep_to_e3",
        "flfd_deep_to_e4",
        "plfd_mid_to_d5",
        "plfd_final_to_d4",
        "plfd_final_to_d3",
        "plfd_final_to_d2",
    }
)
MTMS_CONTRAST = frozenset({"contrast_encoder", "contrast_bottleneck", "contrast_decoder"})

PROFILES = {
    profile.name: profile
    for profile in (
        Profile(
            name="_template_kd",
            data="single",
            tiny={**TINY_3D, "datalist": "$@dataset_dir + '/plain.json'"},
            run_name="kd_student",
            kd_terms=frozenset({"seg", "kd", "feature"}),
            baseline="train_baseline.json",
            baseline_terms=frozenset({"seg"}),
            baseline_model="baseline",
            metrics=("test_mean_dice",),
            test_cases=2,
            inference={"dataset_dir": "brats", "image_pattern": "phantom_000/phantom_000_flair.nii.gz"},
            inference_outputs=1,
            adapters=frozenset({"feature"}),
            teacher_runs=((("train.json", "train_teacher.json"), {}),),
        ),
        Profile(
            name="kdnet_brats_mri",
            data="brats",
            tiny={**TINY_3D, "val_interval": 1, "pixdim": [2.0, 2.0, 2.0]},  # the phantoms' grid
            run_name="kd_student",
            kd_terms=frozenset({"seg", "kd", "latent"}),
            baseline="train_baseline.json",
            baseline_terms=frozenset({"seg"}),
            baseline_model="baseline",
            metrics=("val_mean_dice",),
            test_cases=2,
            inference={},
            inference_outputs=10,
            teacher_runs=((("train.json", "train_teacher.json"), {}),),
        ),
        Profile(
            name="agnostic_transfer_la_mri",
            data="single",
            tiny={**TINY_3D, "val_interval": 1},
            run_name="student",
            kd_terms=frozenset(),
            baseline="train_groundtruth.json",
            baseline_terms=frozenset(),
            baseline_model="groundtruth",
            metrics=("test_mean_dice", "test_hd95_mm"),
            test_cases=2,
            inference={"dataset_dir": "brats", "image_pattern": "phantom_000/phantom_000_flair.nii.gz"},
            inference_outputs=1,
            teacher_runs=tuple(
                (
                    ("train.json", "train_teacher.json"),
                    {"teacher_name": name, f"teacher_nets#{name}#roi_size": [32] * 3},
                )
                for name in ("unet", "segresnet")
            ),
        ),
        Profile(
            name="mtms_contrastive_cardiac_mri",
            data="cardiac",
            tiny={"epochs": 1, "num_workers": 0, "roi_size": [48, 48], "inference_roi_size": [48, 48]},
            run_name="mtms_student",
            kd_terms=frozenset({"seg", "pmd"}) | MTMS_CONTRAST,
            baseline="train_baseline.json",
            baseline_terms=frozenset({"seg"}),
            baseline_model="baseline",
            metrics=("test_mean_dice",),
            test_cases=4,
            inference={"image_pattern": "imagesTr/acdc_patient007_frame01.nii.gz"},
            inference_outputs=1,
            adapters=MTMS_CONTRAST,
            teacher_runs=((("train.json", "train_teacher.json"), {}),),
        ),
        Profile(
            name="hlfd_tumour_ct",
            data="kits",
            tiny={
                "epochs": 1,
                "num_workers": 0,
                "roi_size": [64, 64],
                "inference_roi_size": [64, 64],
                "pixdim": [1.5, 1.5, -1],
                "slices_per_volume": 2,
            },
            run_name="hlfd_student",
            kd_terms=frozenset({"seg_dice", "seg_focal"}) | HLFD_TERMS,
            baseline="train_baseline.json",
            baseline_terms=frozenset({"seg_dice", "seg_focal"}),
            baseline_model="baseline",
            metrics=("test_mean_dice", "test_tumour_slice_dice"),
            test_cases=2,
            inference={"image_pattern": "case_00005/imaging.nii.gz"},
            inference_outputs=1,
            adapters=frozenset(t for t in HLFD_TERMS if t.startswith("plfd")),
            teacher_runs=((("train.json", "train_teacher.json"), {}),),
        ),
    )
}
