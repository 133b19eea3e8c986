"""``tools.measure``: result tables, pseudo-label quality, model cost and the DDP comparison's log reader."""

import argparse
import json
import math

import nibabel as nib
import numpy as np
import pytest

from tests.helpers import REPO
from tools.measure import figures, pseudo_label_quality, results_table, training_log
from tools.measure.compare_ddp import best_metric
from tools.measure.model_cost import model_spec
from tools.measure.overlap import dice, mean_dice


def test_model_spec_separates_configs_from_overrides():
    assert model_spec("train.json,train_teacher.json,teacher_name=segresnet,roi_size=[32,32,32]") == (
        ["train.json", "train_teacher.json"],
        {"teacher_name": "segresnet", "roi_size": [32, 32, 32]},
    )


def test_results_table_reports_each_metric_over_runs(tmp_path, capsys):
    for run_dir, dice_value, hd in (("a", 0.8, 4.0), ("b", 0.6, 6.0)):
        (tmp_path / run_dir).mkdir()
        for metric, value in (("test_mean_dice", dice_value), ("test_hd95_mm", hd)):
            (tmp_path / run_dir / f"{metric}_summary.csv").write_text(f"class,mean\nclass0,{value}\nmean,{value}\n")
    args = ["--metric", "test_mean_dice", "test_hd95_mm", "--row", "student", str(tmp_path / "a"), str(tmp_path / "b")]
    results_table.main(args)
    out = capsys.readouterr().out
    assert "| student | 2 | 0.700 ± 0.141 | 0.800, 0.600 | 5.000 ± 1.414 | 4.000, 6.000 |" in out
    (tmp_path / "c").mkdir()  # a multi-class summary: one row per class
    (tmp_path / "c" / "test_mean_dice_summary.csv").write_text("class,mean\nclass0,0.5\nclass1,0.9\nmean,0.7\n")
    classes = ["--metric", "test_mean_dice:class1", "test_mean_dice", "--row", "multi", str(tmp_path / "c")]
    results_table.main(classes)
    assert "| multi | 1 | 0.900 | 0.900 | 0.700 | 0.700 |" in capsys.readouterr().out
    for run_dir, first, second in (("a", 0.9, 0.5), ("b", 0.7, 0.3)):
        raw = f"filename,class0,mean\n/d/x1.nii.gz,{first},{first}\n/d/x2.nii.gz,{second},{second}\n"
        (tmp_path / run_dir / "test_mean_dice_raw.csv").write_text(raw)
    rows = ["--row", "A", str(tmp_path / "a"), "--row", "B", str(tmp_path / "b")]
    results_table.main(["--metric", "test_mean_dice", "--per_case", *rows])
    out = capsys.readouterr().out
    assert "| x1 | 0.900 | 0.700 |" in out and "| x2 | 0.500 | 0.300 |" in out


def test_pseudo_label_quality_scores_confident_voxels_against_ground_truth(tmp_path, capsys):
    import nibabel as nib

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
    pseudo_label_quality.main(args)
    assert "| t | 1 | 0.667 | 1.6% |" in capsys.readouterr().out
    pseudo_label_quality.main([*args, "--raw_csv", str(tmp_path / "evaluate_t")])  # as an evaluation writes it
    from tools.measure.paired import per_case

    assert per_case(tmp_path / "evaluate_t", "transferal_mean_dice") == pytest.approx({"img": 2 / 3}, abs=1e-6)
    with pytest.raises(SystemExit):
        pseudo_label_quality.main([*args, "--pseudo", "u", str(folder), "--raw_csv", str(tmp_path / "x")])
    assert "--raw_csv takes the Dice of one --pseudo folder, 2 given" in capsys.readouterr().err


def test_pseudo_label_quality_measures_how_alike_two_teachers_errors_are(tmp_path, capsys):
    import nibabel as nib

    truth = np.zeros((4, 4, 4), np.uint8)
    truth[:2] = 1  # rows 0-1: 32 voxels
    first, second = np.zeros_like(truth), np.zeros_like(truth)
    first[0] = 1  # misses row 1: 16 errors
    first[3, 3, 3] = 255  # ignored: left out of both sides' comparison
    second[0], second[2] = 1, 1  # misses row 1 and adds row 2: 32 errors, 16 shared with the first
    for name, array in (("img", truth.astype(np.float32)), ("lab", truth), ("a", first), ("b", second)):
        nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / f"{name}.nii.gz")
    (tmp_path / "split.json").write_text(json.dumps({"transferal": [{"image": "img.nii.gz", "label": "lab.nii.gz"}]}))
    args = ["--dataset_dir", str(tmp_path), "--datalist", str(tmp_path / "split.json")]
    for name in ("a", "b"):
        (tmp_path / f"pl_{name}").mkdir()
        entry = {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / f"{name}.nii.gz")}
        (tmp_path / f"pl_{name}" / "datalist.json").write_text(json.dumps({"training": [entry]}))
        args += ["--pseudo", name, str(tmp_path / f"pl_{name}")]
    pseudo_label_quality.main(args)
    # 63 voxels kept by both: 16 wrong in both, 16 wrong in b only, 31 right in both
    phi = (16 * 31 - 0 * 16) / math.sqrt((16 + 0) * (16 + 31) * (16 + 16) * (0 + 31))
    assert f"| a and b | 1 | 0.500 | {phi:.3f} |" in capsys.readouterr().out


def test_compare_ddp_reads_the_last_best_metric_and_names_a_log_without_one():
    log = (
        "INFO - Key metric: val_mean_dice best value: 0.25 at epoch: 1\n"
        "INFO - Epoch[2] Metrics -- val_mean_dice: 0.3100\n"
        "INFO - Key metric: val_mean_dice best value: 0.31 at epoch: 2\n"
    )
    assert best_metric(log) == ("val_mean_dice", 0.31, 2)
    with pytest.raises(RuntimeError, match="no 'Key metric"):
        best_metric("Epoch: 1/1, Iter: 1/3 -- loss: 1.0")


def write_scalars(run_dir, values: dict[str, dict[int, float]]) -> None:
    """One TensorBoard event file in ``run_dir`` holding ``{tag: {step: value}}``."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir))
    for tag, series in values.items():
        for step, value in series.items():
            writer.add_scalar(tag, value, step)
    writer.close()


def test_training_log_averages_gradients_by_quarter_and_keeps_unlabelled_batches_apart(tmp_path, capsys):
    """8 logged iterations, so a quarter is 2: first quarter steps 0-1, last quarter steps 6-7. A batch
    without labels has grad_norm_seg 0 (steps 1 and 6): its kd norm is averaged apart and its cosine,
    undefined, is left out. Each quarter has one labelled step (0 and 7), so each labelled cell is that
    step's value; the second run doubles every norm and keeps the cosines."""
    seg = {0: 1.0, 1: 0.0, 2: 2.0, 3: 2.0, 4: 2.0, 5: 2.0, 6: 0.0, 7: 3.0}
    kd = {0: 0.5, 1: 0.9, 2: 0.1, 3: 0.1, 4: 0.1, 5: 0.1, 6: 0.3, 7: 0.25}
    cos = {step: 0.1 * step for step in seg}
    for name, scale in (("a", 1.0), ("b", 2.0)):
        write_scalars(
            tmp_path / name,
            {
                "grad_norm_seg": {s: v * scale for s, v in seg.items()},
                "grad_norm_kd": {s: v * scale for s, v in kd.items()},
                "grad_cos_kd": cos,
            },
        )
    table = training_log.gradients(tmp_path / "a")
    assert table[("with labels", "seg", "norm")] == pytest.approx({"first quarter": 1.0, "last quarter": 3.0})
    assert table[("with labels", "kd", "norm")] == pytest.approx({"first quarter": 0.5, "last quarter": 0.25})
    assert table[("without labels", "kd", "norm")] == pytest.approx({"first quarter": 0.9, "last quarter": 0.3})
    assert table[("with labels", "kd", "cos")] == pytest.approx({"first quarter": 0.0, "last quarter": 0.7})
    assert ("without labels", "seg", "norm") not in table
    training_log.main(["gradients", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "g.json")])
    out = capsys.readouterr().out
    assert "| with labels | kd | 0.50 / 1.00 | 0.25 / 0.50 | 0.00 / 0.00 | 0.70 / 0.70 |" in out
    assert "| without labels | kd | 0.90 / 1.80 | 0.30 / 0.60 | – | – |" in out
    assert json.loads((tmp_path / "g.json").read_text())["rows"][0]["term"] == "seg"
    write_scalars(tmp_path / "no_diagnostics", {"loss_seg": {0: 1.0}, "val_mean_dice": {1: 0.5}})
    with pytest.raises(SystemExit, match=r"found none; train with --diagnostics_interval N .*\(found: no grad_norm_"):
        training_log.gradients(tmp_path / "no_diagnostics")
    # HLFD: the segmentation loss is two terms; the Dice half, logged without a cosine, is the reference
    write_scalars(
        tmp_path / "hlfd",
        {"grad_norm_seg_dice": seg, "grad_norm_seg_focal": kd, "grad_cos_seg_focal": cos, "grad_norm_kd": kd},
    )
    with pytest.raises(SystemExit, match="found kd, seg_dice;"):
        training_log.gradients(tmp_path / "hlfd")
    write_scalars(tmp_path / "hlfd", {"grad_cos_kd": cos})
    hlfd = training_log.gradients(tmp_path / "hlfd")
    assert hlfd[("with labels", "seg_focal", "cos")] == table[("with labels", "kd", "cos")]
    assert hlfd[("without labels", "seg_focal", "norm")] == table[("without labels", "kd", "norm")]
    assert ("without labels", "seg_dice", "norm") not in hlfd
    assert [row["term"] for row in training_log.gradient_rows([str(tmp_path / "hlfd")])][:3] == [
        "seg_dice",
        "kd",
        "seg_focal",
    ]
    training_log.main(["gradients", str(tmp_path / "hlfd")])
    out = capsys.readouterr().out
    assert "| cosine with seg_dice, first quarter |" in out and "| seg_dice | 1.00 | 3.00 | 1 (reference) |" in out


def test_training_log_convergence_keeps_a_resumed_runs_last_value_per_epoch(tmp_path, capsys):
    """A resumed run writes a second event file that repeats an epoch: the later value counts."""
    write_scalars(tmp_path / "run", {"val_mean_dice": {5: 0.5, 10: 0.75, 15: 0.625}})  # exact in float32
    write_scalars(tmp_path / "run", {"val_mean_dice": {15: 0.6875, 20: 0.71875}})
    assert training_log.convergence(tmp_path / "run", last=2) == {
        "last": [(15, 0.6875), (20, 0.71875)],
        "best": (10, 0.75),
    }
    training_log.main(["convergence", str(tmp_path / "run")])
    assert "| run | 10: 0.750, 15: 0.688, 20: 0.719 | 0.750 (10) |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not a run folder"):
        training_log.main(["convergence", str(tmp_path / "missing")])
    with pytest.raises(SystemExit):  # argparse's error: --last 0 would silently print every check
        training_log.main(["convergence", str(tmp_path / "run"), "--last", "0"])
    assert "--last must be at least 1, got 0" in capsys.readouterr().err


def test_curves_draw_the_segmentation_term_else_the_whole_loss_and_validation_dice(tmp_path, capsys):
    """Run a logs a segmentation term and the whole loss: the term is drawn; run b logs only the whole
    loss: it is drawn. 10 points smooth over a window of 1, so the lines are the logged values."""
    write_scalars(
        tmp_path / "a",
        {
            "loss_seg": {s: 1.0 - s / 16 for s in range(10)},
            "loss": {s: 5.0 for s in range(10)},
            "val_mean_dice": {1: 0.5, 2: 0.75},
        },
    )
    write_scalars(tmp_path / "b", {"loss": {s: 2.0 + s / 8 for s in range(10)}, "val_mean_dice": {1: 0.25}})
    fig = figures.plot_curves([str(tmp_path / "a"), str(tmp_path / "b")], ["A", "B"], str(tmp_path / "c.png"))
    ax_loss, ax_dice = fig.axes
    (loss_a, loss_b), (dice_a, dice_b) = ax_loss.get_lines(), ax_dice.get_lines()
    assert list(loss_a.get_ydata()) == pytest.approx([1.0 - s / 16 for s in range(10)])
    assert list(loss_b.get_ydata()) == pytest.approx([2.0 + s / 8 for s in range(10)])
    assert (list(dice_a.get_xdata()), list(dice_a.get_ydata())) == ([1, 2], [0.5, 0.75])
    assert (list(dice_b.get_xdata()), list(dice_b.get_ydata())) == ([1], [0.25])
    assert [line.get_label() for line in ax_dice.get_lines()] == ["A", "B"]
    assert (tmp_path / "c.png").stat().st_size > 0 and "wrote" in capsys.readouterr().out
    figures.plt.close(fig)


def test_dice_and_mean_dice_match_hand_counts():
    a = np.array([1, 1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 1, 0], bool)
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0  # nothing to find, nothing found
    pred, label = np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])
    assert mean_dice(pred, label, 3) == pytest.approx((2 / 3 + 2 / 3) / 2)


@pytest.mark.xdist_group("_template_kd")  # the worker that trains the template for the contract tests
def test_kd_audit_tabulates_every_term_and_each_networks_agreement_with_the_label(trained, capsys):
    from tools.measure import kd_audit

    bundle = trained("_template_kd")
    overrides = [f"--set=dataset_dir={bundle.data}", "--set=datalist=$@dataset_dir + '/plain.json'"]
    kd_audit.main([str(bundle.root), "--batches", "2", "--set=roi_size=[32,32,32]", *overrides])
    out = capsys.readouterr().out
    assert "_template_kd: 2 training batch(es), seed 0" in out
    assert "loss terms (reference for the cosine: seg)" in out and "| seg |" in out and "1 (reference)" in out
    for row in ("| kd |", "| feature |", "| student |", "| teacher |"):
        line = next(line for line in out.splitlines() if line.startswith(row))
        assert "–" not in line and line.count("±") >= 3, line


def test_kd_audit_of_the_untrained_student_needs_no_weights(trained, tmp_path, capsys):
    from tools.measure import kd_audit

    bundle = trained("_template_kd")
    overrides = [f"--set=dataset_dir={bundle.data}", "--set=datalist=$@dataset_dir + '/plain.json'"]
    args = [str(bundle.root), "--batches", "1", "--set=roi_size=[32,32,32]", f"--set=model_dir={tmp_path}", *overrides]
    with pytest.raises(FileNotFoundError):
        kd_audit.main(args)  # no model.pt in model_dir
    kd_audit.main([*args, "--student", "init", "--set=run_name=audit_probe"])
    student = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| student |"))
    assert "–" not in student
    assert not (bundle.root / "runs" / "audit_probe").exists()  # the trainer's log folder went elsewhere


@pytest.mark.xdist_group("agnostic_transfer_la_mri")
def test_kd_audit_names_a_bundle_without_distillation_terms(trained):
    from tools.measure import kd_audit

    bundle = trained("agnostic_transfer_la_mri")
    with pytest.raises(ValueError, match="trains with SupervisedTrainer, not a DistillationTrainer"):
        kd_audit.audit(bundle.root, [], {"dataset_dir": str(bundle.data), "roi_size": [32, 32, 32]}, None, 1)


def test_model_cost_builds_networks_that_live_in_a_bundles_scripts():
    from tools.measure.model_cost import cost

    bundle = REPO / "bundles" / "mtms_contrastive_cardiac_mri"
    params, seconds, shape = cost(bundle, ["train.json", "train_teacher.json"], [32, 32, 2], repeats=1)
    assert params == 2_764_741 and seconds > 0 and shape == (32, 32, 2)  # scripts.networks.MultiTaskUNet


def test_paired_difference_matches_a_hand_computed_t_interval_over_cases():
    from tools.measure.paired import paired_difference, sentence

    # two seeds; per-case differences averaged over seeds: a 0.1, b 0.0, c 0.2 -> mean 0.1, sd 0.1
    baseline = [{"a": 0.5, "b": 0.6, "c": 0.7}, {"a": 0.4, "b": 0.6, "c": 0.6}]
    kd = [{"a": 0.7, "b": 0.5, "c": 0.9}, {"a": 0.4, "b": 0.7, "c": 0.8}]
    result = paired_difference(baseline, kd)
    half = 4.302653 * 0.1 / 3**0.5  # t(0.975, 2 df) * sd / sqrt(3)
    assert result["difference"] == pytest.approx(0.1)
    assert result["ci95"] == pytest.approx([0.1 - half, 0.1 + half], abs=1e-5)
    assert result["per_case"] == pytest.approx({"a": 0.1, "b": 0.0, "c": 0.2})
    assert result["per_run"] == pytest.approx([0.1, 0.1]) and not result["excludes_zero"]
    assert "the interval includes 0: no difference shown" in sentence(result)
    assert result["bootstrap_ci95"][0] <= 0.1 <= result["bootstrap_ci95"][1]


def test_paired_difference_takes_the_patient_as_unit_when_frames_are_grouped():
    from tools.measure.paired import paired_difference, sentence

    # two frames per patient, one run pair: frame differences p1 0.1, 0.3; p2 0, 0; p3 0.1, 0.1
    baseline = [{f"p{p}_f{f}": 0.5 for p in (1, 2, 3) for f in (1, 2)}]
    kd = [{"p1_f1": 0.6, "p1_f2": 0.8, "p2_f1": 0.5, "p2_f2": 0.5, "p3_f1": 0.6, "p3_f2": 0.6}]
    frames = paired_difference(baseline, kd)
    patients = paired_difference(baseline, kd, group=r"p\d+")
    # per patient 0.2, 0.0, 0.1: mean 0.1, sd 0.1, 2 df; per frame the same mean, sd sqrt(0.012), 5 df
    assert patients["difference"] == frames["difference"] == pytest.approx(0.1)
    assert patients["ci95"] == pytest.approx([0.1 - 4.302653 * 0.1 / 3**0.5, 0.1 + 4.302653 * 0.1 / 3**0.5], abs=1e-5)
    assert frames["ci95"][1] == pytest.approx(0.1 + 2.570582 * 0.012**0.5 / 6**0.5, abs=1e-5)
    assert (patients["cases"], patients["groups"], patients["group"]) == (6, 3, r"p\d+") and "groups" not in frames
    assert "6 test cases in 3 groups × 1 run pair(s)" in sentence(patients)
    with pytest.raises(ValueError, match="'q9_f1' does not match the group pattern"):
        paired_difference([{"q9_f1": 0.5}], [{"q9_f1": 0.6}], group=r"p\d+")


def test_paired_difference_pairs_cross_validation_folds_and_names_a_mismatch():
    from tools.measure.paired import paired_difference

    folds_base = [{"a": 0.5, "b": 0.5}, {"c": 0.5, "d": 0.5}]  # two folds, other test cases in each
    folds_kd = [{"a": 0.6, "b": 0.7}, {"c": 0.65, "d": 0.65}]
    result = paired_difference(folds_base, folds_kd)
    assert result["cases"] == 4 and result["difference"] == pytest.approx(0.15) and result["excludes_zero"]
    with pytest.raises(ValueError, match="run pair 1: the baseline tested"):
        paired_difference(folds_base, [folds_kd[0], {"c": 0.6}])
    with pytest.raises(ValueError, match="give them in pairs"):
        paired_difference(folds_base, folds_kd[:1])


def test_paired_reads_metrics_saver_files_and_writes_its_result(tmp_path, capsys):
    from tools.measure import paired

    for run, values in (("base", (0.5, 0.6)), ("kd", (0.7, 0.7))):
        (tmp_path / run).mkdir()
        rows = "".join(f"/d/case{i}.nii.gz,{v},{v}\n" for i, v in enumerate(values))
        (tmp_path / run / "test_mean_dice_raw.csv").write_text("filename,class0,mean\n" + rows)
    out = tmp_path / "paired.json"
    paired.main(["--baseline", str(tmp_path / "base"), "--kd", str(tmp_path / "kd"), "--json", str(out)])
    assert "KD − baseline = +0.150" in capsys.readouterr().out
    assert json.loads(out.read_text())["per_case"] == pytest.approx({"case0": 0.2, "case1": 0.1})
    with pytest.raises(FileNotFoundError, match="evaluate that run first"):
        paired.per_case(tmp_path, "test_mean_dice")


def test_benchmark_times_each_step_of_a_bundle_with_its_own_networks():
    from tools.measure import benchmark_kd

    args = argparse.Namespace(
        bundle="mtms_contrastive_cardiac_mri",
        configs=[],
        shape=[32, 32],
        batch=2,
        steps=1,
        warmup=0,
        device="cpu",
        amp=False,
    )
    seconds = benchmark_kd.measure_times(args)
    assert set(seconds) == set(benchmark_kd.MODES) and all(value > 0 for value in seconds.values())


def test_paired_reads_file_names_that_hold_line_breaks(tmp_path):
    from tools.measure import paired

    # MetricsSaver writes names unquoted; these BraTS-style folders hold a line break
    rows = "/d/Case_id: A\nSubject_id: A/Case_id: A\nSubject_id: A_flair.nii.gz,0.5,0.5\n/d/B/B_flair.nii.gz,nan,0.25\n"
    (tmp_path / "m_raw.csv").write_text("filename,class0,mean\n" + rows)
    assert paired.per_case(tmp_path, "m") == {"A_flair": 0.5, "B_flair": 0.25}
    (tmp_path / "m_raw.csv").write_text("filename,class0,mean\n/d/C/C.nii.gz,0.5\n")
    with pytest.raises(ValueError, match="has no 2 values"):
        paired.per_case(tmp_path, "m")


def test_cv_study_pools_folds_per_seed_and_pairs_each_arm_with_the_baseline(tmp_path, capsys):
    import torch

    from tools.measure import cv_study

    def evaluated(run: str, values: dict[str, float], best: float) -> None:
        folder = tmp_path / f"evaluate_{run}"
        folder.mkdir()
        lines = [f"/d/{case}.nii.gz,{v},{v}" for case, v in values.items()]
        (folder / "val_mean_dice_raw.csv").write_text("filename,class0,mean\n" + "\n".join(lines) + "\n")
        (tmp_path / run).mkdir()
        tracker = {"_saved": [(best, "model_key_metric.pt")]}
        for epoch in (9, 10):  # the newest checkpoint holds the run's best validation Dice
            torch.save(
                {"best_model_tracker": tracker | {"_saved": [(best - 10 + epoch, "x.pt")]}},
                tmp_path / run / f"checkpoint_epoch={epoch}.pt",
            )

    evaluated("f0_teacher", {"a": 0.9, "b": 0.8}, 0.95)
    evaluated("f1_teacher", {"c": 0.9, "d": 0.8}, 0.85)
    for seed, shift in ((0, 0.0), (1, 0.1)):
        evaluated(f"f0_baseline_s{seed}", {"a": 0.5 + shift, "b": 0.6}, 0.6)
        evaluated(f"f1_baseline_s{seed}", {"c": 0.7, "d": 0.4}, 0.5)
        evaluated(f"f0_kd_s{seed}", {"a": 0.6 + shift, "b": 0.6}, 0.7)
    evaluated("f1_kd_s0", {"c": 0.9, "d": 0.4}, 0.7)
    cv_study.main([str(tmp_path), "--json", str(tmp_path / "study.json")])
    summary = json.loads((tmp_path / "study.json").read_text())
    # seed 0 of the baseline: mean of a, b, c, d = (0.5 + 0.6 + 0.7 + 0.4) / 4; seed 1: (0.6 + 0.6 + 0.7 + 0.4) / 4
    assert summary["baseline"]["per_seed"] == {"0": 0.55, "1": 0.575}
    teacher_f1 = summary["teacher"]["per_run"]["f1"]
    assert teacher_f1.pop("test_cases") == {"c": 0.9, "d": 0.8}  # each test case's Dice, for the results file
    assert teacher_f1 == pytest.approx({"validation_dice": 0.85, "test_dice": 0.85})
    assert summary["baseline"]["validation_dice"] == pytest.approx(0.55) and summary["teacher"]["runs"] == 2
    # kd pairs f0_s0, f0_s1, f1_s0: case a +0.1 (both seeds), b 0, c +0.2, d 0 -> mean 0.075
    assert summary["kd"]["paired"]["difference"] == pytest.approx(0.075)
    assert summary["kd"]["paired"]["run_pairs"] == ["f0_s0", "f0_s1", "f1_s0"]
    assert summary["kd"]["complete"] and summary["kd"]["seeds"] == [0, 1]
    assert "| teacher | 2 | 0,1 | – | 0.900 | 0.850 |" in capsys.readouterr().out and "paired" not in summary["teacher"]
    # against the teacher, which has no seeds: every seed of a fold pairs with the fold's teacher
    cv_study.main([str(tmp_path), "--baseline", "teacher", "--json", str(tmp_path / "against_teacher.json")])
    against_teacher = json.loads((tmp_path / "against_teacher.json").read_text())
    # a: (-0.3 - 0.2) / 2, b: -0.2, c: 0, d: -0.4 -> mean -0.2125
    assert against_teacher["kd"]["paired"]["difference"] == pytest.approx(-0.2125)
    assert against_teacher["kd"]["paired"]["run_pairs"] == ["f0_s0", "f0_s1", "f1_s0"]
    assert "kd: KD − teacher = -0.21" in capsys.readouterr().out
    # another metric: HLFD's tumour-slice Dice, written beside the whole-volume file for one pair of runs
    for run, a in (("f0_baseline_s0", 0.25), ("f0_kd_s0", 0.75)):
        rows = f"filename,class0,mean\n/d/a.nii.gz,{a},{a}\n/d/b.nii.gz,0.5,0.5\n"
        (tmp_path / f"evaluate_{run}" / "val_tumour_slice_dice_raw.csv").write_text(rows)
    cv_study.main([str(tmp_path), "--metric", "tumour_slice_dice", "--json", str(tmp_path / "slices.json")])
    slices = json.loads((tmp_path / "slices.json").read_text())
    assert set(slices) == {"baseline", "kd"} and slices["baseline"]["per_seed"] == {"0": 0.375}
    assert slices["kd"]["paired"]["difference"] == pytest.approx(0.25)  # a: +0.5, b: 0
    assert "| test tumour_slice_dice, mean ± sd over seeds |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="metric 'hausdorff'; metrics there: mean_dice, tumour_slice_dice"):
        cv_study.main([str(tmp_path), "--metric", "hausdorff"])


@pytest.mark.xdist_group("_template_kd")
def test_fault_injection_kills_training_and_finds_it_resumed_with_nothing_lost(trained, tmp_path, capsys):
    import sys

    from tools.measure import fault_injection

    bundle = trained("_template_kd")
    overrides = bundle.profile.overrides(bundle.data, epochs=12, run_name="faults", model_dir=str(tmp_path / "model"))
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(bundle.root / "configs" / "train.json"),
    ]
    command += ["--bundle_root", str(bundle.root)]
    for key, value in overrides.items():
        command += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    checkpoints = bundle.root / "runs" / "faults"
    args = ["--kills", "2", "--seed", "0", "--window", "4", "8", "--checkpoints", str(checkpoints), "--epochs", "12"]
    with pytest.raises(SystemExit) as exit_code:
        fault_injection.main([*args, "--", *command])
    out = capsys.readouterr().out
    assert exit_code.value.code == 0, out
    assert "2 kill(s)" in out and "final checkpoint epoch 12 of 12; nothing lost" in out
    assert "| 3 | ran to its end |" in out and "| NO |" not in out


@pytest.mark.xdist_group("_template_kd")
def test_latency_times_each_model_end_to_end_in_a_process_of_its_own(trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from tools.bundle.export_onnx import export as export_onnx
    from tools.measure import latency

    bundle = trained("_template_kd")
    onnx_file, _ = export_onnx(bundle.root, [], {}, tmp_path / "model.onnx", atol=1e-3)
    args = [
        str(bundle.root),
        "--dataset_dir",
        str(bundle.data / "brats"),
        "--image_pattern",
        "phantom_00[01]/*_flair.nii.gz",
    ]
    args += ["--set", f"onnx_file={onnx_file}", "--model", "student", "--model", "ONNX Runtime", "inference_onnx.json"]
    capsys.readouterr()  # what making the phantoms printed
    latency.main([*args, "--compare_to", "student"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "_template_kd: median over 2 volume(s) (the first a warm-up), CPU, 2 threads"
    assert lines[1].endswith("| label maps vs student: lowest class Dice |")
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in lines[3:]}
    assert set(rows) == {"student", "ONNX Runtime"} and rows["student"][-2] == "1.00×"
    assert rows["student"][-1] == "1.0000 |" and float(rows["ONNX Runtime"][-1].strip("| ")) >= 0.99
    for row in rows.values():
        end_to_end, inferer = float(row[1]), float(row[2])
        assert 0 < inferer <= end_to_end
    with pytest.raises(SystemExit):
        latency.main([*args, "--compare_to", "teacher"])
    expected = "--compare_to 'teacher' is not a --model label; the labels: ['student', 'ONNX Runtime']"
    assert expected in capsys.readouterr().err


def test_latency_agreement_names_a_missing_map_or_another_grid(tmp_path):
    from tools.measure.latency import agreement

    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir()
    label = np.zeros((4, 4, 4), np.uint8)
    label[:2] = 1
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "a" / "x_seg.nii.gz")
    assert agreement(tmp_path / "a", tmp_path / "b") == "no map for x_seg.nii.gz"
    changed = label.copy()
    changed[2] = 1  # class 1: 32 voxels against 48, Dice 0.8; background 0.6667
    nib.save(nib.Nifti1Image(changed, np.eye(4)), tmp_path / "b" / "x_seg.nii.gz")
    assert agreement(tmp_path / "a", tmp_path / "b") == "0.6667"
    nib.save(nib.Nifti1Image(label, np.diag([2.0, 2, 2, 1])), tmp_path / "c" / "x_seg.nii.gz")
    assert agreement(tmp_path / "a", tmp_path / "c") == "x_seg.nii.gz: another grid"


def test_fault_injection_judges_annotation_folders_by_their_manifest_and_whole_labels(tmp_path):
    import hashlib

    from tools.measure.fault_injection import Annotation

    labels = tmp_path / "labels"
    labels.mkdir()
    cases = {}
    for case in ("a", "b"):
        nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.uint8), np.eye(4)), labels / f"{case}.nii.gz")
        digest = hashlib.sha256((labels / f"{case}.nii.gz").read_bytes()).hexdigest()
        cases[case] = {"image": f"/data/{case}.nii.gz", "label": f"labels/{case}.nii.gz", "label_sha256": digest}
    (tmp_path / "manifest.json").write_text(json.dumps({"settings": {}, "cases": cases}))
    job = Annotation(tmp_path)
    assert job.before() == 2 and job.damaged() == []
    assert job.resumed_as_expected(2, "0 case(s) annotated, 2 already done", killed=False)
    assert not job.resumed_as_expected(1, "1 case(s) annotated, 2 already done", killed=False)
    assert job.resumed_as_expected(1, "killed while loading", killed=True)
    assert not job.finished()[0]  # no datalist.json yet

    (labels / ".partial-1-c.nii.gz").write_bytes(b"half")  # a temporary name: not a damaged result
    cut = (labels / "b.nii.gz").read_bytes()
    (labels / "b.nii.gz").write_bytes(cut[: len(cut) // 2])
    assert job.before() == 1
    assert job.damaged() == ["labels/b.nii.gz", "manifest.json: b"]

    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "x"}]}))
    assert job.finished() == (True, "1 case(s) in the manifest, 1 in datalist.json")


def test_fault_injection_judges_an_export_by_verifying_the_zip_under_its_final_name(tmp_path):
    from tests.tools.test_bundle_tools import fake_bundle
    from tools.bundle.export import export
    from tools.measure.fault_injection import Export

    job = Export(tmp_path / "dist" / "tiny_bundle_v1.2.3.zip")
    assert job.damaged() == [] and job.finished() == (False, "tiny_bundle_v1.2.3.zip missing")
    archive = export(fake_bundle(tmp_path), tmp_path / "dist")
    assert archive == job.zip_path and job.damaged() == [] and job.finished()[0]
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])
    assert job.damaged()[0].startswith("tiny_bundle_v1.2.3.zip: the zip's SHA-256")
