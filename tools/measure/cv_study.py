"""The arms of a cross-validated study side by side: validation and test Dice over folds and seeds,
and each arm's paired difference against the baseline.

    python -m tools.measure.cv_study bundles/kdnet_brats_mri/runs [--baseline baseline] [--group RE] [--metric M]
        [--json study.json]

Reads what ``tools/reproduce/kdnet_brats_cv.sh``, ``mtms_acdc_study.sh`` (or any script naming runs the same way) leave
in a bundle's ``runs/``: a run ``f<fold>_<arm>_s<seed>`` (a teacher, one per fold and not paired:
``f<fold>_<arm>``) has its training checkpoints in ``runs/<run>/`` (the newest one holds the best
validation Dice the run selected its model on) and its test evaluation in
``runs/evaluate_<run>/<val or test>_mean_dice_raw.csv`` (``--metric tumour_slice_dice`` reads
``<val or test>_tumour_slice_dice_raw.csv`` instead, HLFD's replication figure).
Per arm it prints the runs found, the mean best validation Dice, the test Dice as mean ± sd over
seeds (a seed's value: the mean over every test case of the folds it ran) and, for every arm
but the baseline, the paired difference against the baseline over the (fold, seed) pairs both
ran (against a baseline without seeds, a teacher, each seed pairs with the fold's one run): per
test case, averaged over seeds, with a 95 % t interval over cases, or over patients with
``--group 'patient\\d+'`` (:func:`tools.measure.paired.paired_difference`). An arm missing folds is marked, never pooled
silently.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

import torch

from common.handlers import epoch_checkpoints
from tools.measure.paired import paired_difference, per_case, sentence

RUN = re.compile(r"^f(\d+)_(.+?)(?:_s(\d+))?$")


def best_validation(run_dir: Path) -> float | None:
    """The best validation Dice a training run recorded (its newest checkpoint's model tracker)."""
    checkpoints = epoch_checkpoints(str(run_dir))
    if not checkpoints:
        return None
    saved = torch.load(checkpoints[0], map_location="cpu", weights_only=True)["best_model_tracker"]["_saved"]
    return float(saved[0][0]) if saved else None


def collect(runs: Path, metric: str = "mean_dice") -> dict[str, dict[tuple[int, int], dict]]:
    """``{arm: {(fold, seed): {"test": {case: value}, "validation": best}}}`` for every run evaluated
    with ``metric`` (the per-case file ``<val or test>_<metric>_raw.csv``)."""
    arms: dict[str, dict[tuple[int, int], dict]] = defaultdict(dict)
    for evaluation in sorted(runs.glob("evaluate_f*")):
        match = RUN.match(evaluation.name.removeprefix("evaluate_"))
        raw = sorted(evaluation.glob(f"*_{metric}_raw.csv"))
        if not match or not raw:
            continue
        fold, arm = int(match.group(1)), match.group(2)
        seed = int(match.group(3)) if match.group(3) is not None else None  # a teacher: one per fold
        name = evaluation.name.removeprefix("evaluate_")
        arms[arm][(fold, seed)] = {
            "test": per_case(evaluation, raw[0].name.removesuffix("_raw.csv")),
            "validation": best_validation(runs / name),
        }
    return arms


def _partner(key: tuple[int, int], baseline: dict) -> tuple[int, int | None] | None:
    """The baseline run a run is paired with: the same fold and seed, or the fold's one run of a
    seedless baseline (a teacher), or none."""
    fold = key[0]
    return key if key in baseline else (fold, None) if (fold, None) in baseline else None


def summarise(arms: dict[str, dict[tuple[int, int], dict]], baseline: str, group: str | None = None) -> dict[str, dict]:
    folds = sorted({fold for runs in arms.values() for fold, _ in runs})
    summary = {}
    for arm, runs in sorted(arms.items()):
        seeds = sorted({seed for _, seed in runs})
        per_seed = {}
        for seed in seeds:
            cases = [value for (_, s), run in runs.items() if s == seed for value in run["test"].values()]
            per_seed[seed] = statistics.mean(cases)
        validation = [run["validation"] for run in runs.values() if run["validation"] is not None]
        row = {
            "runs": len(runs),
            "folds": sorted({fold for fold, _ in runs}),
            "complete": sorted({fold for fold, _ in runs}) == folds,
            "seeds": seeds,
            "validation_dice": statistics.mean(validation) if validation else None,
            "test_dice": statistics.mean(per_seed.values()),
            "test_dice_sd": statistics.stdev(per_seed.values()) if len(per_seed) > 1 else None,
            "per_seed": {str(seed) if seed is not None else "-": round(value, 4) for seed, value in per_seed.items()},
            "per_run": {
                f"f{fold}" + (f"_s{seed}" if seed is not None else ""): {
                    "validation_dice": run["validation"],
                    "test_dice": round(statistics.mean(run["test"].values()), 4),
                    "test_cases": {case: round(value, 4) for case, value in sorted(run["test"].items())},
                }
                for (fold, seed), run in sorted(runs.items(), key=lambda item: (item[0][0], item[0][1] or 0))
            },
        }
        if arm != baseline and baseline in arms and any(seed is not None for seed in seeds):
            pairs = [(partner, key) for key in sorted(runs) if (partner := _partner(key, arms[baseline]))]
            if pairs:
                row["paired"] = paired_difference(
                    [arms[baseline][partner]["test"] for partner, _ in pairs],
                    [runs[key]["test"] for _, key in pairs],
                    group=group,
                ) | {"run_pairs": [f"f{fold}_s{seed}" for _, (fold, seed) in pairs]}
        summary[arm] = row
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="a bundle's runs/ folder")
    parser.add_argument("--baseline", default="baseline", help="the arm the others are paired against")
    parser.add_argument(
        "--group", help="regular expression: test cases with the same match (a patient's frames) form one unit"
    )
    parser.add_argument(
        "--metric", default="mean_dice", help="the per-case metric compared (<val or test>_<metric>_raw.csv)"
    )
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    arms = collect(args.runs, args.metric)
    if not arms:
        found = sorted(
            {raw.name.split("_", 1)[1].removesuffix("_raw.csv") for raw in args.runs.glob("evaluate_f*/*_raw.csv")}
        )
        raise SystemExit(
            f"no run named f<fold>_<arm>[_s<seed>] under {args.runs} was evaluated with metric '{args.metric}'"
            + (f"; metrics there: {', '.join(found)}" if found else "")
        )
    summary = summarise(arms, args.baseline, args.group)
    measure = "test Dice" if args.metric == "mean_dice" else f"test {args.metric}"
    print(f"| arm | runs | folds | seeds | best validation Dice | {measure}, mean ± sd over seeds | per seed |")
    print("|---|---:|---|---|---:|---:|---|")
    for arm, row in summary.items():
        folds = ",".join(map(str, row["folds"])) + ("" if row["complete"] else " (incomplete)")
        sd = f" ± {row['test_dice_sd']:.3f}" if row["test_dice_sd"] is not None else ""
        validation = f"{row['validation_dice']:.3f}" if row["validation_dice"] is not None else "–"
        seeds = ", ".join(f"{value:.3f}" for value in row["per_seed"].values())
        print(
            f"| {arm} | {row['runs']} | {folds} | {','.join(str(s) for s in row['seeds'] if s is not None) or '–'} "
            f"| {validation} "
            f"| {row['test_dice']:.3f}{sd} | {seeds} |"
        )
    for arm, row in summary.items():
        if "paired" in row:
            print(f"{arm}: {sentence(row['paired'], args.baseline)}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
