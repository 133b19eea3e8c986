r"""Split a Decathlon datalist's cases into seeded training / validation / test (and more) lists.

    python tools/split_datalist.py --datalist ../shared/data/brats_subset/dataset.json \
        --out /tmp/brats_split.json --val 2 --test 4 --seed 0
    python tools/split_datalist.py --datalist ../shared/data/la2018/dataset.json \
        --out /tmp/la_split.json --val 4 --test 10 --list transferal=18 --list finetune=4 --seed 0
    python tools/split_datalist.py --datalist ../shared/data/acdc/dataset.json --out /tmp/acdc_split.json \
        --val 10 --test 0 --test_from validation --group 'patient\d+' --seed 0

``--group REGEX`` keeps the cases whose paths share a match (e.g. one patient's ED and ES frames)
in the same list, and the sizes then count groups; ``--test_from KEY`` takes the test list as it
is from the source datalist's list ``KEY`` (a given test set).

Paths stay relative to the source datalist's folder, so configs keep ``--dataset_dir`` pointing
there. The chosen cases are printed, to be written in the bundle's docs.
"""

from __future__ import annotations

import argparse
import json
import os
import random

from common.data import case_id


def split_cases(
    cases: list, n_val: int, n_test: int, seed: int, extra: dict[str, int] | None = None
) -> dict[str, list]:
    """Shuffle ``cases`` with ``seed`` and cut them into disjoint lists: ``test``, ``validation``, each
    ``extra`` list (name: size, e.g. ``{"transferal": 18}``), and ``training`` with the rest."""
    sizes = {"test": n_test, "validation": n_val, **(extra or {})}
    if any(n < 0 for n in sizes.values()) or sum(sizes.values()) >= len(cases):
        raise ValueError(f"cannot take {sizes} cases out of {len(cases)} and leave some for training.")
    order = list(range(len(cases)))
    random.Random(seed).shuffle(order)
    split, start = {}, 0
    for name, n in sizes.items():
        split[name] = [cases[i] for i in sorted(order[start : start + n])]
        start += n
    return {"training": [cases[i] for i in sorted(order[start:])], **split}


def group_cases(cases: list, pattern: str | None) -> list[list]:
    """Cases grouped by the first match of ``pattern`` in the image path (``common.data.case_id``),
    in first-seen order; each case its own group without a pattern. A case without a match is an
    error naming it."""
    if pattern is None:
        return [[case] for case in cases]
    groups: dict[str, list] = {}
    for case in cases:
        groups.setdefault(case_id(case, pattern), []).append(case)
    return list(groups.values())


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
    parser.add_argument("--list", action="append", default=[], metavar="NAME=N", help="a further disjoint list")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group", help="regex: cases whose image paths share its match stay together")
    parser.add_argument("--test_from", help="take the test list unchanged from this list of the source datalist")
    args = parser.parse_args()
    extra = {name: int(n) for name, n in (item.split("=") for item in args.list)}
    with open(args.datalist) as f:
        source = json.load(f)
    groups = split_cases(group_cases(source[args.key], args.group), args.val, args.test, args.seed, extra)
    split = {key: [case for group in chosen for case in group] for key, chosen in groups.items()}
    if args.test_from:
        split["test"] = source[args.test_from]
    out = {k: v for k, v in source.items() if k != args.key} | split
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    for key, items in split.items():
        print(f"{key} ({len(items)}): {', '.join(case_name(i) for i in items)}")


if __name__ == "__main__":
    main()
