"""The collection's main job on embedded data: KD-Net end to end on synthetic phantoms.

Generates seeded two-modality phantoms, then runs the bundle as a user would
(``python -m monai.bundle run``): the teacher on both modalities, the mono-modal student without
and with distillation, and the test-set evaluation of all three; prints a table of Dice,
parameters and CPU inference time per volume. Everything is written under ``--workdir`` (a copy
of the bundle), never into the repository.

    python -m tools.reproduce.demo_kdnet --workdir /tmp/kdnet_demo
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tools.data import synthetic_brats
from tools.measure.model_cost import cost

REPO = Path(__file__).resolve().parents[2]

BUNDLE = "kdnet_brats_mri"


def bundle_run(root: Path, configs: list[str], overrides: list[str]) -> float:
    files = repr([str(root / "configs" / c) for c in configs])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(root), *overrides]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return time.perf_counter() - start


def test_dice(root: Path, run_dir: str) -> float:
    with open(root / "runs" / run_dir / "val_mean_dice_summary.csv") as f:
        row = next(r for r in csv.reader(f) if r[0] == "class0")
    return float(row[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="where data, bundle copy and runs go (default: a temp dir)")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--size", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kdnet_demo_"))
    data, root = work / "phantoms", work / BUNDLE
    synthetic_brats.main(
        ["--out", str(data), "--cases", str(args.cases), "--size", str(args.size), "--seed", str(args.seed)]
    )
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(REPO / "bundles" / BUNDLE, root, ignore=shutil.ignore_patterns("runs", "eval", "models"))
    (root / "models" / "teacher").mkdir(parents=True)
    common = [
        "--dataset_dir",
        str(data),
        "--roi_size",
        str([args.size] * 3),
        "--num_workers",
        "0",
        "--seed",
        str(args.seed),
    ]
    train = common + ["--epochs", str(args.epochs)]
    stages = [  # name, overlay configs, what the network reads
        ("teacher (FLAIR+T1)", ["train.json", "train_teacher.json"], "teacher"),
        ("student T1, no KD", ["train.json", "train_baseline.json"], "baseline"),
        ("student T1, KD-Net", ["train.json"], "models"),
    ]
    rows = []
    for name, configs, model_dir in stages:
        print(f"training {name} ...", flush=True)
        wall = bundle_run(root, configs, train)
        bundle_run(root, configs + ["evaluate.json"], common)
        params, seconds, _ = cost(root, configs, [args.size] * 3, overrides={"roi_size": [args.size] * 3})
        rows.append((name, test_dice(root, f"evaluate_{model_dir}"), params, seconds, wall))
    print(
        f"\nKD-Net on {args.cases} synthetic phantoms ({args.size}^3, seed {args.seed}), test-set Dice, CPU "
        f"{torch.get_num_threads()} threads; results under {work}"
    )
    print(f"{'model':22s} {'Dice':>6s} {'params':>9s} {'infer s/vol':>11s} {'train s':>8s}")
    for name, dice, params, seconds, wall in rows:
        print(f"{name:22s} {dice:6.3f} {params:9,d} {seconds:11.3f} {wall:8.0f}")


if __name__ == "__main__":
    main()
