"""Dice of pseudo labels against ground truth, for transferal cases that happen to have labels.

    python -m tools.measure.pseudo_label_quality --dataset_dir /data/la2018 --datalist SPLIT --key transferal \
        --pseudo unet runs/pseudo_unet --pseudo fused runs/pseudo_fused

A diagnostic of the annotate stage (the method never reads these labels): for each pseudo-label
folder (written by the transfer bundle's ``scripts.annotate.PseudoLabeler``), the mean foreground Dice over the cases
of ``--key`` and the fraction of voxels the confidence mask ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import nibabel as nib
import numpy as np
from monai.data import load_decathlon_datalist

from tools.measure.overlap import dice


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--datalist", required=True)
    parser.add_argument("--key", default="transferal")
    parser.add_argument("--pseudo", nargs=2, action="append", metavar=("NAME", "FOLDER"), required=True)
    parser.add_argument("--ignore_value", type=int, default=255)
    args = parser.parse_args(argv)
    truth = {
        os.path.abspath(i["image"]): i["label"]
        for i in load_decathlon_datalist(args.datalist, True, args.key, args.dataset_dir)
    }
    print("| pseudo labels | cases | Dice vs ground truth, mean ± std over cases | ignored voxels |")
    print("|---|---:|---:|---:|")
    for name, folder in args.pseudo:
        with open(os.path.join(folder, "datalist.json")) as f:
            entries = json.load(f)["training"]
        scores, ignored = [], []
        for entry in entries:
            pseudo = np.asarray(nib.load(os.path.join(folder, entry["label"])).dataobj)
            label = np.asarray(nib.load(truth[entry["image"]]).dataobj) > 0
            kept = pseudo != args.ignore_value
            scores.append(dice((pseudo == 1) & kept, label & kept))
            ignored.append(1 - kept.mean())
        spread = f" ± {statistics.stdev(scores):.3f}" if len(scores) > 1 else ""
        print(f"| {name} | {len(scores)} | {statistics.mean(scores):.3f}{spread} | {statistics.mean(ignored):.1%} |")


if __name__ == "__main__":
    main()
