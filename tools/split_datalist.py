"""Split a Decathlon datalist's cases into seeded training / validation / test lists.

    python tools/split_datalist.py --datalist ../shared/data/brats_subset/dataset.json \
        --out /tmp/brats_split.json --val 2 --test 4 --seed 0

Paths stay relative to the source datalist's folder, so configs keep ``--dataset_dir`` pointing
there. The chosen cases are printed, to be written in the bundle's docs.
"""

from __future__ import annotations

import argparse
import json
import os
import random


def split_cases(cases: list, n_val: int, n_test: int, seed: int) -> dict[str, list]:
    """Shuffle ``cases`` with ``seed`` and cut them into training, validation and test lists."""
    if n_val < 0 or n_test < 0 or n_val + n_test >= len(cases):
        raise ValueError(f"cannot take {n_val} validation and {n_test} test cases out of {len(cases)}.")
    order = list(range(len(cases)))
    random.Random(seed).shuffle(order)
    test = [cases[i] for i in sorted(order[:n_test])]
    val = [cases[i] for i in sorted(order[n_test : n_test + n_val])]
    train = [cases[i] for i in sorted(order[n_test + n_val :])]
    return {"training": train, "validation": val, "test": test}


def case_name(item: dict) -> str:
    image = item["image"][0] if isinstance(item["image"], list) else item["image"]
    return os.path.basename(image).split()[-1].split("_flair")[0].split(".nii")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datalist", required=True)
    parser.add_argument("--key", default="training", help="list of the source datalist to split")
    parser.add_argument("--out", required=True)
    parser.add_argument("--val", type=int, required=True)
    parser.add_argument("--test", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with open(args.datalist) as f:
        source = json.load(f)
    split = split_cases(source[args.key], args.val, args.test, args.seed)
    out = {k: v for k, v in source.items() if k != args.key} | split
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    for key, items in split.items():
        print(f"{key} ({len(items)}): {', '.join(case_name(i) for i in items)}")


if __name__ == "__main__":
    main()
