"""``tools.reproduce``: every shell script parses, and each reproduction script and demo runs end to
end on phantoms for one epoch (the slow tier: minutes each, run by CI after the README's command)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.helpers import REPO, copy_bundle, run
from tools.data import synthetic_brats, synthetic_cardiac, synthetic_ct

SCRIPTS = sorted((REPO / "tools").rglob("*.sh")) + [REPO / ".ci" / "run"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shell_script_parses(script):
    run(["bash", "-n", str(script)])


@pytest.mark.parametrize(
    ("script", "arms"),
    [
        ("kdnet_brats_cv.sh", "baseline paper tuned sweep_b<B>_t<T>, each also as <arm>_half"),
        ("hlfd_brats_study.sh", "teacher baseline logit_kd at flfd plfd hlfd hlfd_paper hlfd_f<F>_p<P>"),
        (
            "mtms_acdc_study.sh",
            "baseline baseline_long baseline_all pmd paper dense feature_mse, each KD arm with _u (KD on the unlabelled"
            " half too) or _long (labelled only, baseline_long's steps), dense_w<W> and dense_w<W>_u (the sweep);"
            " any but baseline_all with _q (a quarter labelled)",
        ),
    ],
)
def test_a_misspelt_arm_stops_a_study_before_any_training(tmp_path, script, arms):
    environment = os.environ | {"PYTHON": sys.executable, "BUNDLES": str(tmp_path / "bundles")}
    command = ["bash", f"tools/reproduce/{script}", str(tmp_path), "baseline basline"]
    result = run(command, env=environment, expect_failure=True)
    assert result.returncode == 2 and result.stderr.strip() == f"unknown arm 'basline'; arms: {arms}"
    assert not any((tmp_path / "bundles").rglob("*.json"))  # no split written, nothing trained


def test_the_mtms_study_refuses_a_quarter_of_every_label(tmp_path):
    """``baseline_all`` uses every patient's labels: ``baseline_all_q`` would silently be the same run."""
    environment = os.environ | {"PYTHON": sys.executable, "BUNDLES": str(tmp_path / "bundles")}
    command = ["bash", "tools/reproduce/mtms_acdc_study.sh", str(tmp_path), "baseline_q baseline_all_q"]
    result = run(command, env=environment, expect_failure=True)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "arm 'baseline_all_q': baseline_all trains with every label, so '_q' (a quarter) does not apply"
    )
    assert not any((tmp_path / "bundles").rglob("*.json"))


def test_the_mtms_study_refuses_a_dense_weight_that_is_not_a_number(tmp_path):
    """``dense_w<W>`` and ``dense_w<W>_u`` read W from the arm's name; anything else in its place stops the study."""
    environment = os.environ | {"PYTHON": sys.executable, "BUNDLES": str(tmp_path / "bundles")}
    command = ["bash", "tools/reproduce/mtms_acdc_study.sh", str(tmp_path), "dense_w0.1_u dense_w0.1x_u"]
    result = run(command, env=environment, expect_failure=True)
    assert result.returncode == 2
    message = "arm 'dense_w0.1x_u': the dense weight '0.1x' is not a number (dense_w0.1, dense_w0.1_u)"
    assert result.stderr.strip() == message
    assert not any((tmp_path / "bundles").rglob("*.json"))


def reproduce(script: str, bundle: str, tmp_path: Path, *args: str, extra: str = "", **env: str) -> str:
    """``bash tools/reproduce/<script> ARGS`` on a scratch copy of ``bundle``; returns the output."""
    copy_bundle(bundle, tmp_path / "bundles")
    environment = os.environ | {"PYTHON": sys.executable, "BUNDLES": str(tmp_path / "bundles"), "EXTRA_ARGS": extra}
    result = run(["bash", f"tools/reproduce/{script}", *args], env=environment | env, timeout=1800)
    return result.stdout + result.stderr


def scalar_tags(run_dir: Path) -> set[str]:
    """The scalar tags of every TensorBoard file a training run wrote."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in run_dir.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags.update(accumulator.Tags()["scalars"])
    return tags


def walls(output: str) -> list[str]:
    """The stages a script ran, from its ``NAME wall N s`` lines."""
    return [line.split(" wall ")[0] for line in output.splitlines() if " wall " in line]


@pytest.mark.slow
def test_kdnet_reproduction_runs_every_stage(tmp_path):
    data = tmp_path / "brats"
    synthetic_brats.main(["--out", str(data), "--cases", "10", "--size", "32", "--val", "0", "--test", "0"])
    extra = "--roi_size [32,32,32] --pixdim [2.0,2.0,2.0] --val_interval 1 --num_workers 0"
    output = reproduce("kdnet_brats.sh", "kdnet_brats_mri", tmp_path, str(data), "1", "0", extra=extra)
    assert walls(output) == [
        "teacher",
        "evaluate_teacher",
        "baseline_seed0",
        "evaluate_baseline_seed0",
        "kd_seed0",
        "evaluate_kd_seed0",
    ]


def single_channel_cases(folder: Path, cases: int) -> Path:
    """``cases`` single-channel phantoms listed under ``training`` of ``folder/dataset.json``."""
    synthetic_brats.main(
        ["--out", str(folder / "src"), "--cases", str(cases), "--size", "32", "--val", "0", "--test", "0"]
    )
    source = json.loads((folder / "src" / "dataset.json").read_text())
    items = [{"image": f"src/{c['image'][0]}", "label": f"src/{c['label']}"} for c in source["training"]]
    (folder / "dataset.json").write_text(json.dumps({"training": items}))
    return folder


@pytest.mark.slow
def test_transfer_study_runs_each_stage_once_and_pairs_students_with_a_teacher(tmp_path):
    data = single_channel_cases(tmp_path / "la", 13)
    sizes = {"N_TEACHER": "2", "N_TRANSFERAL": "3", "N_FINETUNE": "2", "N_VAL": "2", "N_TEST": "2"}
    env = sizes | {"TEACHER_EPOCHS": "1", "STUDENT_EPOCHS": "1", "FINETUNE_EPOCHS": "1", "VAL_INTERVAL": "1"}
    extra = "--roi_size [32,32,32] --num_workers 0"
    extra += " --teacher_nets#unet#roi_size [32,32,32] --teacher_nets#segresnet#roi_size [32,32,32]"
    args = (str(data), "labelled_only fused fused_soft finetuned", "0")
    output = reproduce("transfer_la_study.sh", "agnostic_transfer_la_mri", tmp_path, *args, extra=extra, **env)
    teachers = [name for t in ("unet", "segresnet") for name in (f"f0_teacher_{t}", f"evaluate_f0_teacher_{t}")]
    annotations = [f"annotate_{s}" for s in ("unet", "segresnet", "fused", "fused_conf", "fused_soft")]
    students = [
        n for a in ("labelled_only", "fused", "fused_soft", "finetuned") for n in (f"f0_{a}_s0", f"evaluate_f0_{a}_s0")
    ]
    assert walls(output) == teachers + annotations + students
    assert "| unet and segresnet | 3 |" in output  # how alike the teachers' errors are
    again = run(
        ["bash", "tools/reproduce/transfer_la_study.sh", *args],
        env=os.environ | env | {"PYTHON": sys.executable, "BUNDLES": str(tmp_path / "bundles"), "EXTRA_ARGS": extra},
    )
    assert walls(again.stdout + again.stderr) == []  # every stage left its marker: nothing runs twice
    runs = str(tmp_path / "bundles/agnostic_transfer_la_mri/runs")
    table = run([sys.executable, "-m", "tools.measure.cv_study", runs, "--baseline", "teacher_unet"]).stdout
    assert "| teacher_segresnet | 1 | 0 | – |" in table and "fused: KD − teacher_unet = " in table
    model = torch.load(
        tmp_path / "bundles/agnostic_transfer_la_mri/runs/study/f0_finetuned_s0/model.pt", weights_only=True
    )
    assert sum(v.numel() for v in model.values()) < 200_000  # the compact student


@pytest.mark.slow
def test_transfer_study_distils_an_nnunet_trained_with_its_own_commands(tmp_path):
    pytest.importorskip("nnunetv2", reason="optional: pip install --no-deps -r requirements-nnunet.txt")
    data = single_channel_cases(tmp_path / "la", 13)
    sizes = {"N_TEACHER": "2", "N_TRANSFERAL": "3", "N_FINETUNE": "2", "N_VAL": "2", "N_TEST": "2"}
    env = sizes | {"TEACHER_EPOCHS": "1", "STUDENT_EPOCHS": "1", "FINETUNE_EPOCHS": "1", "VAL_INTERVAL": "1"}
    env |= {"NNUNET_EPOCHS": "1", "NNUNET_ITERATIONS": "2", "NNUNET_WORKERS": "1"}
    extra = "--roi_size [32,32,32] --num_workers 0"
    extra += " --teacher_nets#unet#roi_size [32,32,32] --teacher_nets#segresnet#roi_size [32,32,32]"
    args = (str(data), "nnunet nnunet_finetuned", "0")
    output = reproduce("transfer_la_study.sh", "agnostic_transfer_la_mri", tmp_path, *args, extra=extra, **env)
    stages = walls(output)
    nnunet_stages = ["nnunet_teacher", "annotate_nnunet", "annotate_nnunet_test"]
    students = [n for a in ("nnunet", "nnunet_finetuned") for n in (f"f0_{a}_s0", f"evaluate_f0_{a}_s0")]
    assert stages[stages.index("nnunet_teacher") :] == nnunet_stages + students
    runs = tmp_path / "bundles/agnostic_transfer_la_mri/runs"
    trained = runs / "study/nnunet/results/Dataset101_LA/nnUNetTrainer__nnUNetPlans_CPU__3d_fullres/fold_all"
    assert json.loads((trained / "debug.json").read_text())["num_epochs"] == "1"  # the budget given
    assert (trained / "checkpoint_final.pth").is_file()
    raw = (runs / "evaluate_f0_teacher_nnunet" / "test_mean_dice_raw.csv").read_text().splitlines()
    assert raw[0] == "filename,class0,mean" and len(raw) == 1 + 2  # the 2 test cases
    table = run([sys.executable, "-m", "tools.measure.cv_study", str(runs), "--baseline", "teacher_nnunet"]).stdout
    assert "nnunet_finetuned: KD − teacher_nnunet = " in table


def acdc_like(folder: Path, training: int = 2) -> Path:
    """Phantom patients in the ACDC layout: the 10-patient validation split of the scripts, ``training``
    patients beside it and 2 test patients."""
    patients = str(10 + training + 2)
    synthetic_cardiac.main(
        ["--out", str(folder), "--patients", patients, "--validation", "2", "--size", "64", "--slices", "4"]
    )
    return folder


ACDC_EXTRA = "--roi_size [64,64] --inference_roi_size [64,64] --num_workers 0 --val_interval 1"


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, bundle, variants, shipped_weights",
    [
        (
            "mtms_acdc.sh",
            "mtms_contrastive_cardiac_mri",
            ("baseline", "infonce", "supervised", "encoder", "bottleneck", "decoder", "pmd_only"),
            ["model.pt", "teacher/model.pt"],  # ACDC is the shipped MTMS model's data
        ),
        # the shipped HLFD weights come from the BraTS study; the retired ACDC tables must not replace them
        ("hlfd_acdc.sh", "hlfd_tumour_ct", ("baseline", "logit_kd", "at", "hlfd", "flfd", "plfd"), []),
    ],
)
def test_acdc_reproductions_run_every_stage(tmp_path, script, bundle, variants, shipped_weights):
    data = str(acdc_like(tmp_path / "acdc"))
    output = reproduce(script, bundle, tmp_path, data, "1", "0", extra=ACDC_EXTRA, TEACHER_EPOCHS="1")
    stages = [f"{stage}{variant}_seed0" for variant in variants for stage in ("", "evaluate_")]
    assert walls(output) == ["teacher", "evaluate_teacher", *stages]
    models = tmp_path / "bundles" / bundle / "models"
    assert sorted(p.relative_to(models).as_posix() for p in models.rglob("*.pt")) == shipped_weights


@pytest.mark.slow
def test_mtms_study_runs_each_arm_once_and_tabulates_it(tmp_path):
    data = str(acdc_like(tmp_path / "acdc", training=4))  # a quarter of them: one labelled patient
    args = (data, "baseline dense_w0.1_u baseline_long_q pmd_u_q pmd_long_q baseline_all", "0")
    env = {"STUDENT_EPOCHS": "1", "TEACHER_EPOCHS": "1", "VAL_INTERVAL": "1", "DIAGNOSTICS_INTERVAL": "1"}
    output = reproduce("mtms_acdc_study.sh", "mtms_contrastive_cardiac_mri", tmp_path, *args, extra=ACDC_EXTRA, **env)
    runs = ["f0_teacher", *(f"f0_{arm}_s0" for arm in args[1].split())]
    assert walls(output) == [name for run in runs for name in (run, f"evaluate_{run}")]
    # the quarter setting: the labelled-only arm trains on one patient for four times the epochs, the
    # "_u" arm distils on all four with the labels of that one
    assert "data_fraction 0.25: 1 of 4 cases" in output and "Epoch: 4/4" in output
    # a labelled-only KD arm with "_long" trains as many steps as baseline_long: four epochs of its one patient
    assert (tmp_path / "bundles/mtms_contrastive_cardiac_mri/runs/f0_pmd_long_q_s0/checkpoint_epoch=4.pt").is_file()
    assert "label_fraction 0.25: 1 of 4 cases" in output
    assert "label_fraction 0.5: 2 of 4 cases" in output  # dense_w0.1_u: the sweep arm distils on the unlabelled half
    assert "data_fraction 1.0: 4 of 4 cases" in output  # baseline_all: every patient's labels
    # the KD arms log every term's gradient share (TensorBoard); the sweep arm trains at its own weight
    logged = {
        arm: scalar_tags(tmp_path / f"bundles/mtms_contrastive_cardiac_mri/runs/f0_{arm}_s0") for arm in args[1].split()
    }
    assert "grad_norm_contrast_decoder" in logged["dense_w0.1_u"] and "grad_norm_pmd" in logged["pmd_long_q"]
    assert not any(tag.startswith("grad_") for tag in logged["baseline"])
    assert "'bottleneck': 0.1, 'decoder': 0.1" in output
    again = run(
        ["bash", "tools/reproduce/mtms_acdc_study.sh", *args],
        env=os.environ
        | env
        | {"PYTHON": sys.executable, "BUNDLES": str(tmp_path / "bundles"), "EXTRA_ARGS": ACDC_EXTRA},
    )
    assert walls(again.stdout + again.stderr) == []  # every stage left its marker: nothing runs twice
    table = run(
        [sys.executable, "-m", "tools.measure.cv_study", str(tmp_path / "bundles/mtms_contrastive_cardiac_mri/runs")]
    )
    assert "| dense_w0.1_u | 1 | 0 | 0 |" in table.stdout and "dense_w0.1_u: KD − baseline = " in table.stdout


@pytest.mark.slow
def test_hlfd_brats_study_pairs_the_wide_teacher_with_the_fcn_student_on_flair_slices(tmp_path):
    data = tmp_path / "brats"
    synthetic_brats.main(["--out", str(data), "--cases", "8", "--size", "32", "--val", "0", "--test", "0"])
    args = (str(data), "hlfd_f0.5_p0.1", "0", "1")
    env = {"STUDENT_EPOCHS": "1", "TEACHER_EPOCHS": "1", "VAL_INTERVAL": "1", "KD_WARMUP": "1"}
    extra = "--pixdim [1.0,1.0,-1] --roi_size [32,32] --inference_roi_size [32,32] --num_workers 0"
    output = reproduce("hlfd_brats_study.sh", "hlfd_tumour_ct", tmp_path, *args, extra=extra, **env)
    runs = ["f1_teacher", "f1_hlfd_f0.5_p0.1_s0"]
    # the student is evaluated twice: its best-validation checkpoint and the weights it ended with
    expected = [name for run in runs for name in (run, f"evaluate_{run}")] + ["evaluate_f1_hlfd_f0.5_p0.1_last_s0"]
    assert walls(output) == expected
    study = tmp_path / "bundles/hlfd_tumour_ct/runs/brats"
    split = json.loads((study / "fold1.json").read_text())
    assert all(item["image"].endswith("_flair.nii.gz") for key in ("training", "test") for item in split[key])
    teacher = torch.load(study / "f1_teacher/model.pt", weights_only=True)
    assert teacher["conv_4_0.convs.conv_0.conv.weight"].shape[0] == 512  # half the official widths
    student = torch.load(study / "f1_hlfd_f0.5_p0.1_s0/model.pt", weights_only=True)
    assert "classifier.weight" in student and not any(k.startswith("decoder") for k in student)
    assert "loss_flfd_deep_to_e2" in output and "loss_plfd_final_to_d2" in output
    final = torch.load(study / "f1_hlfd_f0.5_p0.1_last_s0/model.pt", weights_only=True)
    ended = torch.load(
        tmp_path / "bundles/hlfd_tumour_ct/runs/f1_hlfd_f0.5_p0.1_s0/checkpoint_epoch=1.pt", weights_only=True
    )["model"]
    assert final.keys() == student.keys() and all(torch.equal(final[k], ended[k]) for k in final)
    evaluations = tmp_path / "bundles/hlfd_tumour_ct/runs"
    assert (evaluations / "evaluate_f1_hlfd_f0.5_p0.1_last_s0/test_mean_dice_raw.csv").is_file()
    again = run(
        ["bash", "tools/reproduce/hlfd_brats_study.sh", *args],
        env=os.environ | env | {"PYTHON": sys.executable, "BUNDLES": str(tmp_path / "bundles"), "EXTRA_ARGS": extra},
    )
    assert walls(again.stdout + again.stderr) == []  # both evaluations left their files: nothing runs twice


@pytest.mark.slow
def test_hlfd_brats_study_trains_a_teacher_only_for_the_arms_that_read_one(tmp_path):
    data = tmp_path / "brats"
    synthetic_brats.main(["--out", str(data), "--cases", "8", "--size", "32", "--val", "0", "--test", "0"])
    env = {"STUDENT_EPOCHS": "1", "TEACHER_EPOCHS": "1", "VAL_INTERVAL": "1"}
    extra = "--pixdim [1.0,1.0,-1] --roi_size [32,32] --inference_roi_size [32,32] --num_workers 0"
    output = reproduce(
        "hlfd_brats_study.sh", "hlfd_tumour_ct", tmp_path, str(data), "baseline", "0", "1", extra=extra, **env
    )
    assert walls(output) == ["f1_baseline_s0", "evaluate_f1_baseline_s0", "evaluate_f1_baseline_last_s0"]
    study = tmp_path / "bundles/hlfd_tumour_ct/runs/brats"
    assert not (study / "f1_teacher").exists()
    teacher_only = run(
        ["bash", "tools/reproduce/hlfd_brats_study.sh", str(data), "teacher", "0", "1"],
        env=os.environ | env | {"PYTHON": sys.executable, "BUNDLES": str(tmp_path / "bundles"), "EXTRA_ARGS": extra},
    )
    assert walls(teacher_only.stdout + teacher_only.stderr) == ["f1_teacher", "evaluate_f1_teacher"]  # no student
    assert (study / "f1_teacher/trained").is_file()


@pytest.mark.slow
def test_hlfd_ct_demo_runs_on_a_ct_phantom(tmp_path):
    phantoms = tmp_path / "lits"
    synthetic_ct.main(["--out", str(phantoms), "--layout", "lits", "--cases", "1", "--size", "64", "--slices", "8"])
    ct = tmp_path / "ct"
    ct.mkdir()
    for source, name in (("volume-0.nii", "example_ct_sm.nii.gz"), ("segmentation-0.nii", "example_seg.nii.gz")):
        image = nib.load(phantoms / source)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine), ct / name)
    output = reproduce(
        "hlfd_ct_demo.sh",
        "hlfd_tumour_ct",
        tmp_path,
        str(ct),
        str(tmp_path / "out"),
        "1",
        extra="--roi_size [64,64] --inference_roi_size [64,64]",
    )
    assert walls(output) == ["teacher", "hlfd_student", "evaluate", "inference"]
    assert "kidney Dice of the student on the training CT:" in output


@pytest.mark.slow
def test_kdnet_demo_shows_progress_and_prints_its_table_over_seeds(tmp_path):
    args = ["--workdir", str(tmp_path), "--cases", "24", "--size", "24", "--roi", "16", "--epochs", "2"]
    output = run([sys.executable, "-m", "tools.reproduce.demo_kdnet", *args, "--seeds", "0", "1"], timeout=1800).stdout
    assert "labels on 2 of 8 training phantoms" in output
    assert "student T1, KD-Net, seed 1 [####################] epoch 2/2  validation Dice" in output
    table = output[output.index("model  ") :].splitlines()
    assert [line[:22].strip() for line in table[1:4]] == [
        "teacher (FLAIR+T1)",
        "student T1, no KD",
        "student T1, KD-Net",
    ]
    assert " ± " in table[2] and table[4].startswith("KD − baseline = ") and "12 test cases × 2 run pair(s)" in table[4]


@pytest.mark.slow
def test_kdnet_cross_validation_runs_each_stage_once_and_tabulates_it(tmp_path):
    data = tmp_path / "brats"
    synthetic_brats.main(["--out", str(data), "--cases", "10", "--size", "32", "--val", "0", "--test", "0"])
    datalist = json.loads((data / "dataset.json").read_text())
    datalist["training"] = [item | {"t1_kind": "T1"} for item in datalist["training"]]
    (data / "dataset.json").write_text(json.dumps(datalist))
    args = (str(data), "baseline paper_half", "0", "0")  # <arm>_half: labels on half the cases
    env = {"STUDENT_EPOCHS": "1", "TEACHER_EPOCHS": "1", "VAL_INTERVAL": "1", "PIXDIM": "2.0", "ROI": "32"}
    output = reproduce("kdnet_brats_cv.sh", "kdnet_brats_mri", tmp_path, *args, extra="--num_workers 0", **env)
    assert walls(output) == [
        "f0_teacher",
        "evaluate_f0_teacher",
        "f0_baseline_s0",
        "evaluate_f0_baseline_s0",
        "f0_paper_half_s0",
        "evaluate_f0_paper_half_s0",
    ]
    assert output.count("label_fraction 0.5: 3 of 6 cases") == 1  # the half arm alone: the baseline has every label
    again = run(  # FINAL: the shipped models, fitted on all ten cases once the folds are done
        ["bash", "tools/reproduce/kdnet_brats_cv.sh", *args],
        env=os.environ
        | env
        | {"PYTHON": sys.executable, "BUNDLES": str(tmp_path / "bundles"), "EXTRA_ARGS": "--num_workers 0"}
        | {"FINAL": "paper"},
    )
    assert walls(again.stdout + again.stderr) == ["final_teacher", "final_paper", "final_baseline"]  # folds: done
    bundle = tmp_path / "bundles/kdnet_brats_mri"
    for shipped, fitted in (("teacher", "teacher"), ("", "paper"), ("baseline", "baseline")):
        assert (bundle / "models" / shipped / "model.pt").read_bytes() == (
            bundle / "runs/final" / fitted / "model.pt"
        ).read_bytes()
    final_split = json.loads((bundle / "runs/final/split.json").read_text())
    assert (len(final_split["training"]), len(final_split["validation"]), final_split["test"]) == (8, 2, [])
    table = run([sys.executable, "-m", "tools.measure.cv_study", str(tmp_path / "bundles/kdnet_brats_mri/runs")])
    assert "| paper_half | 1 | 0 | 0 |" in table.stdout and "paper_half: KD − baseline = " in table.stdout


def table_rows(text: str) -> list[list[str]]:
    """Input, target, outcome and verdict of each row of the bad-input tables (not the messages)."""
    return [line.split(" | ")[:4] for line in text.splitlines() if line.startswith("| ") and "---" not in line]


@pytest.mark.slow
def test_the_bad_input_table_regenerates_as_documented_and_every_row_passes(tmp_path):
    table = tmp_path / "bad_inputs.md"
    environment = os.environ | {"PYTHON": sys.executable}
    run(["bash", "tools/reproduce/bad_inputs.sh", str(tmp_path / "work"), str(table)], env=environment, timeout=1800)
    rows = table_rows(table.read_text())
    assert len(rows) == 4 * (1 + 22) and not [r for r in rows if r[3] not in ("yes", "passes")]
    assert rows == table_rows((REPO / "docs" / "bad_inputs.md").read_text())


def test_nnunet_train_names_a_bad_budget_and_nnunet_s_missing_folders(monkeypatch, capsys):
    from tools.reproduce import nnunet_train

    with pytest.raises(SystemExit):
        nnunet_train.main(["101", "3d_fullres", "all", "--epochs", "0", "--iterations", "5"])
    assert "--epochs must be >= 1, got 0" in capsys.readouterr().err
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(SystemExit):
        nnunet_train.main(["101", "3d_fullres", "all", "--epochs", "2", "--iterations", "5"])
    assert "set nnUNet_raw (nnU-Net's folders)" in capsys.readouterr().err
