"""The collection's main job on embedded data: KD-Net end to end on synthetic phantoms, 3 seeds.

Generates seeded two-modality phantoms in which the student's modality (T1) carries a weak but
learnable cue (lesion-like distractors slightly fainter than the lesion), while the teacher's
extra modality (FLAIR) shows the lesion plainly. Labels are used on a fraction of the training
cases only, by every model: the teacher (FLAIR+T1) and the student without KD learn from those
labelled cases; the KD-Net student learns from the same labels plus the teacher's maps on every
training image, labelled or not (the bundle's ``label_fraction``). Runs the bundle as a user would
(``python -m monai.bundle run``): teacher, then per seed the student without and with KD, each
selected on validation and evaluated on the test phantoms; prints Dice as mean ± sd over the
seeds and the paired KD − no-KD difference over test cases with its 95 % interval. Everything is
written under ``--workdir`` (a copy of the bundle), never into the repository.

    python -m tools.reproduce.demo_kdnet --workdir /tmp/kdnet_demo
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import logging
import math
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import torch
from monai.bundle import run as run_bundle

from common.data import load_datalist, split_labelled
from tools.data import synthetic_brats
from tools.measure.model_cost import cost
from tools.measure.paired import paired_difference, per_case, sentence

REPO = Path(__file__).resolve().parents[2]
BUNDLE = "kdnet_brats_mri"
EPOCH_DONE = re.compile(r"DistillationTrainer - INFO - Epoch\[(\d+)\] Complete")
VAL_DICE = re.compile(r"Epoch\[(\d+)\] Metrics -- val_mean_dice: ([\d.]+)")


class Progress:
    """One line per training run: a bar redrawn in place on a terminal, else a line per validation."""

    def __init__(self, label: str, epochs: int) -> None:
        self.label, self.epochs, self.start = label, epochs, time.perf_counter()
        self.epoch, self.printed, self.dice = 0, 0, None
        self.tty = sys.stdout.isatty()

    def line(self) -> str:
        done = round(20 * self.epoch / self.epochs)
        dice = f"  validation Dice {self.dice:.3f}" if self.dice is not None else ""
        elapsed = time.perf_counter() - self.start
        bar = "#" * done + "." * (20 - done)
        return f"  {self.label:26s} [{bar}] epoch {self.epoch}/{self.epochs}{dice}  {elapsed:4.0f} s"

    def update(self, text: str) -> None:
        if match := EPOCH_DONE.search(text):
            self.epoch = int(match.group(1))
            if self.tty:
                print("\r" + self.line(), end="", flush=True)
        elif match := VAL_DICE.search(text):  # logged before the epoch's "Complete"
            self.epoch, self.dice = int(match.group(1)), float(match.group(2))
            if not self.tty:
                self.printed = self.epoch
                print(self.line(), flush=True)

    def close(self) -> None:
        if self.tty:
            print("\r" + self.line(), flush=True)
        elif self.printed != self.epoch:  # the last epochs ran after the last validation
            print(self.line(), flush=True)


def bundle_train(root: Path, configs: list[str], overrides: dict, progress: Progress) -> float:
    """``python -m monai.bundle run`` on the bundle copy, its log fed to ``progress``; the wall time."""
    files = repr([str(root / "configs" / c) for c in configs])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(root)]
    cmd += [text for key, value in overrides.items() for text in (f"--{key}", str(value))]
    start = time.perf_counter()
    tail: deque[str] = deque(maxlen=60)
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for text in proc.stdout:
            tail.append(text)
            progress.update(text)
    progress.close()
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{''.join(tail)}")
    return time.perf_counter() - start


def bundle_test(root: Path, configs: list[str], overrides: dict) -> None:
    """``evaluate.json`` through ``monai.bundle.run`` in this process (the per-case test Dice under
    ``runs/evaluate_<model folder>``), its log kept out of the demo's output."""
    log = io.StringIO()
    logging.disable(logging.WARNING)  # MONAI's loggers write to the stdout they found at import
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            run_bundle(
                config_file=[str(root / "configs" / c) for c in [*configs, "evaluate.json"]],
                bundle_root=str(root),
                logging_file=False,
                **overrides,
            )
        except Exception as error:
            sys.exit(f"evaluation failed ({configs}, {overrides}): {error}\n{log.getvalue()[-3000:]}")
        finally:
            logging.disable(logging.NOTSET)


def write_labelled_datalist(data: Path, label_fraction: float, label_seed: int) -> tuple[Path, int, int]:
    """The phantoms' datalist with only the training cases whose labels the bundle's
    ``label_fraction`` keeps (the same draw, :func:`common.data.split_labelled`), for the models
    that learn from labels alone; returns it with the labelled and total training counts."""
    datalist = json.loads((data / "dataset.json").read_text())
    items = load_datalist(str(data / "dataset.json"), "training", str(data), image_channels=2)
    marked = split_labelled(items, label_fraction, label_seed)
    labelled = [entry for entry, item in zip(datalist["training"], marked, strict=True) if item.get("labelled", 1)]
    path = data / "dataset_labelled.json"
    path.write_text(json.dumps({**datalist, "training": labelled}, indent=2))
    return path, len(labelled), len(items)


def parse_override(text: str) -> tuple[str, object]:
    """``ID=VALUE`` as the bundle CLI reads it (a Python literal, else the string)."""
    key, _, value = text.partition("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where data, bundle copy and runs go (default: a temp dir)")
    parser.add_argument("--cases", type=int, default=36, help="phantoms (4 validate, 12 test, the rest train)")
    parser.add_argument("--size", type=int, default=32, help="phantom edge in voxels")
    parser.add_argument("--roi", type=int, default=24, help="training crop edge in voxels")
    parser.add_argument("--t1_cue", type=float, default=0.2, help="how much fainter the T1 distractors are")
    parser.add_argument("--label_fraction", type=float, default=0.25, help="training cases whose labels are used")
    parser.add_argument("--epochs", type=int, default=40, help="KD student epochs (an epoch: every training case)")
    parser.add_argument(
        "--teacher_epochs", type=int, help="epochs over the labelled cases (default: as many iterations as a student)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="student seeds")
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument(
        "--kd_override", nargs="*", default=[], metavar="ID=VALUE", help="config overrides of the KD student only"
    )
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kdnet_demo_"))
    data, root = work / "phantoms", work / BUNDLE
    synthetic_brats.main(
        ["--out", str(data), "--cases", str(args.cases), "--size", str(args.size), "--seed", str(args.data_seed)]
        + ["--val", "4", "--test", "12", "--t1_cue", str(args.t1_cue)]
    )
    labelled_list, n_labelled, n_train = write_labelled_datalist(data, args.label_fraction, label_seed=0)
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(REPO / "bundles" / BUNDLE, root, ignore=shutil.ignore_patterns("runs", "eval", "models"))
    # the phantoms' own 2 mm grid (no resampling), whatever the bundle's default spacing
    common = {"dataset_dir": str(data), "pixdim": [2.0] * 3, "roi_size": [args.roi] * 3, "num_workers": 0}
    print(
        f"labels on {n_labelled} of {n_train} training phantoms; the KD student also learns from the other "
        f"{n_train - n_labelled} through the teacher",
        flush=True,
    )

    def train_and_test(label: str, configs: list[str], epochs: int, model_dir: Path, overrides: dict) -> Path:
        """Trains (selecting on validation), tests; the folder of the per-case test Dice."""
        run = {**common, "model_dir": str(model_dir), "val_interval": max(1, epochs // 5), **overrides}
        bundle_train(root, configs, {**run, "epochs": epochs}, Progress(label, epochs))
        bundle_test(root, configs, run)
        return root / "runs" / f"evaluate_{model_dir.name}"  # evaluate.json names it after the model folder

    # The models that learn from labels alone train on the labelled cases, for at least as many
    # iterations as the KD student makes over all training cases (batches of 2, the bundle's): a
    # baseline that had every chance.
    labelled_epochs = math.ceil(args.epochs * math.ceil(n_train / 2) / math.ceil(n_labelled / 2))
    start = time.perf_counter()
    teacher = train_and_test(
        "teacher (FLAIR+T1)",
        ["train.json", "train_teacher.json"],
        args.teacher_epochs or labelled_epochs,
        root / "models" / "teacher",
        {"datalist": str(labelled_list)},
    )
    arms = {  # name: label, configs, epochs, overrides
        "baseline": (
            "student T1, no KD",
            ["train.json", "train_baseline.json"],
            labelled_epochs,
            {"datalist": str(labelled_list)},
        ),
        "kd": (
            "student T1, KD-Net",
            ["train.json"],
            args.epochs,
            {"label_fraction": args.label_fraction, **dict(parse_override(o) for o in args.kd_override)},
        ),
    }
    results: dict[str, list[Path]] = {arm: [] for arm in arms}
    for seed in args.seeds:
        for arm, (label, configs, epochs, overrides) in arms.items():
            model_dir = root / "runs" / f"{arm}_seed{seed}"
            results[arm].append(
                train_and_test(f"{label}, seed {seed}", configs, epochs, model_dir, {"seed": seed, **overrides})
            )
    wall = time.perf_counter() - start
    dice = {
        arm: [statistics.mean(per_case(f, "val_mean_dice").values()) for f in folders]
        for arm, folders in results.items()
    }
    teacher_dice = statistics.mean(per_case(teacher, "val_mean_dice").values())
    shape = [args.size] * 3
    teacher_cost = cost(root, ["train.json", "train_teacher.json"], shape, overrides={"roi_size": shape})
    student_cost = cost(root, ["train.json"], shape, overrides={"roi_size": shape})
    print(
        f"\nKD-Net on {args.cases} synthetic phantoms ({args.size}^3, T1 cue {args.t1_cue}, labels on {n_labelled} of "
        f"{n_train} training cases), test Dice over {len(args.seeds)} student seeds, CPU {torch.get_num_threads()} "
        f"threads, {wall:.0f} s of training and testing; results under {work}"
    )
    print(f"{'model':22s} {'test Dice':>15s} {'params':>9s} {'infer s/vol':>11s}")
    print(f"{'teacher (FLAIR+T1)':22s} {teacher_dice:15.3f} {teacher_cost[0]:9,d} {teacher_cost[1]:11.3f}")
    for arm, (label, *_) in arms.items():
        values = dice[arm]
        spread = (
            f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"
        )
        print(f"{label:22s} {spread:>15s} {student_cost[0]:9,d} {student_cost[1]:11.3f}")
    paired = paired_difference(
        [per_case(f, "val_mean_dice") for f in results["baseline"]],
        [per_case(f, "val_mean_dice") for f in results["kd"]],
    )
    print(sentence(paired))
    print("per seed: " + ", ".join(f"{v:+.3f}" for v in paired["per_run"]))


if __name__ == "__main__":
    main()
