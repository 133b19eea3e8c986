"""Dice of pseudo labels against ground truth, for transferal cases that happen to have labels.

    python -m tools.measure.pseudo_label_quality --dataset_dir /data/la2018 --datalist SPLIT --key transferal \
        --pseudo unet runs/pseudo_unet --pseudo fused runs/pseudo_fused

A diagnostic of the annotate stage (the method never reads these labels): for each pseudo-label
folder (written by the transfer bundle's ``scripts.annotate.PseudoLabeler``), the mean foreground Dice over the cases
of ``--key`` and the fraction of voxels the confidence mask ignored; then, for every two folders,
how alike their errors are: the Jaccard overlap of their error voxels and the correlation (phi)
of their error indicators, per case over the voxels neither ignored (a case one of them ignored
entirely is left out), as mean ± sd over cases.
Fusion can only correct a teacher where another teacher is right: errors that coincide (overlap
near 1) leave it nothing to fix.

``--raw_csv FOLDER`` (one ``--pseudo``) also writes each case's Dice to
``FOLDER/<key>_mean_dice_raw.csv`` in the layout of MONAI's ``MetricsSaver``, so a teacher whose
label maps of the test cases were written by the annotate stage (``--transferal_key test``) is
evaluated like a bundle's model (``runs/evaluate_<run>/``: ``tools.measure.paired``,
``tools.measure.cv_study``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data import load_decathlon_datalist

from tools.bundle.files import write_atomic
from tools.measure.overlap import dice
from tools.measure.paired import mean_sd


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--datalist", required=True)
    parser.add_argument("--key", default="transferal")
    parser.add_argument("--pseudo", nargs=2, action="append", metavar=("NAME", "FOLDER"), required=True)
    parser.add_argument("--ignore_value", type=int, default=255)
    parser.add_argument("--raw_csv", help="write each case's Dice here (MetricsSaver layout; one --pseudo)")
    args = parser.parse_args(argv)
    if args.raw_csv and len(args.pseudo) != 1:
        parser.error(f"--raw_csv takes the Dice of one --pseudo folder, {len(args.pseudo)} given")
    truth = {
        os.path.abspath(i["image"]): i["label"]
        for i in load_decathlon_datalist(args.datalist, True, args.key, args.dataset_dir)
    }
    errors: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}  # name: case: (error, kept)
    print("| pseudo labels | cases | Dice vs ground truth, mean ± std over cases | ignored voxels |")
    print("|---|---:|---:|---:|")
    for name, folder in args.pseudo:
        with open(os.path.join(folder, "datalist.json")) as f:
            entries = json.load(f)["training"]
        scores, ignored, per_case = [], [], {}
        errors[name] = {}
        for entry in entries:
            pseudo = np.asarray(nib.load(os.path.join(folder, entry["label"])).dataobj)
            label = np.asarray(nib.load(truth[entry["image"]]).dataobj) > 0
            kept = pseudo != args.ignore_value
            if kept.any():  # a case whose every voxel was ignored has no Dice
                per_case[entry["image"]] = dice((pseudo == 1) & kept, label & kept)
                scores.append(per_case[entry["image"]])
            ignored.append(1 - kept.mean())
            errors[name][entry["image"]] = ((pseudo == 1) != label, kept)
        print(f"| {name} | {len(entries)} | {mean_sd(scores)} | {statistics.mean(ignored):.1%} |")
        if args.raw_csv:
            rows = "".join(f"{image},{value:.6f},{value:.6f}\n" for image, value in per_case.items())
            os.makedirs(args.raw_csv, exist_ok=True)
            raw = os.path.join(args.raw_csv, f"{args.key}_mean_dice_raw.csv")
            write_atomic(Path(raw), ("filename,class0,mean\n" + rows).encode())
    pairs = list(itertools.combinations(errors, 2))
    if pairs:
        print("\n| pseudo labels | cases | error overlap (Jaccard) | error correlation (phi) |")
        print("|---|---:|---:|---:|")
    for a, b in pairs:
        cases = sorted(set(errors[a]) & set(errors[b]))
        overlap, phi = [], []
        for case in cases:
            (error_a, kept_a), (error_b, kept_b) = errors[a][case], errors[b][case]
            both = kept_a & kept_b
            if not both.any():  # one folder ignored every voxel: nothing to compare
                continue
            overlap.append(error_overlap(error_a[both], error_b[both]))
            phi.append(error_correlation(error_a[both], error_b[both]))
        print(f"| {a} and {b} | {len(overlap)} | {mean_sd(overlap)} | {mean_sd(phi)} |")


def error_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard index of two error masks (1: the same voxels are wrong; 0 when neither errs)."""
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def error_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation (phi) of two binary error masks; 0 when either is constant."""
    a, b = a.ravel().astype(float), b.ravel().astype(float)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


if __name__ == "__main__":
    main()
