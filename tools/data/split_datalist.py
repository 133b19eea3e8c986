r"""Split a Decathlon datalist's cases into seeded training / validation / test (and more) lists.

    python -m tools.data.split_datalist --datalist /data/brats_subset/dataset.json \
        --out /data/brats_split.json --val 2 --test 4 --seed 0
    python -m tools.data.split_datalist --datalist /data/la2018/dataset.json \
        --out /data/la_split.json --val 4 --test 10 --list transferal=18 --list finetune=4 --seed 0
    python -m tools.data.split_datalist --datalist /data/acdc/dataset.json --out /data/acdc_split.json \
        --val 10 --test 0 --test_from validation --group 'patient\d+' --seed 0

    python -m tools.data.split_datalist --datalist /data/brats_subset/dataset.json \
        --out /data/brats_fold0.json --folds 4 --fold 0 --val 2 --seed 0

``--folds K --fold I`` writes fold I of a K-fold cross-validation: the cases are cut once, seeded,
into K test folds of near-equal size; fold I is the test list, ``--val`` cases of the others
validate and the rest train (so every case is tested exactly once over the K folds).
``--only KEY=VALUE`` keeps the items whose entry KEY equals VALUE (e.g. ``--only t1_kind=T1``).
``--image_file I`` keeps the I-th of each item's image files (one file per modality): a
single-modality datalist, e.g. the FLAIR of the BraTS subset (``--image_file 0``).
``--group REGEX`` keeps the cases whose paths share a match (e.g. one patient's ED and ES frames)
in the same list, and the sizes then count groups; ``--test_from KEY`` takes the test list as it
is from the source datalist's list ``KEY`` (a given test set). The split is
``common.data.split_cases``, the one the bundles' ``data_fraction`` uses too.

Paths stay relative to the source datalist's folder, so configs keep ``--dataset_dir`` pointing
there. The chosen cases are printed, to be written in the bundle's docs.
"""

from __future__ import annotations

import argparse
import json
import os

from common.data import group_cases, split_cases


def one_image_file(item: dict, index: int, parser: argparse.ArgumentParser) -> dict:
    """``item`` with its ``image`` list cut to the file at ``index``; the parser reports a bad index."""
    images = item["image"] if isinstance(item["image"], list) else [item["image"]]
    if not -len(images) <= index < len(images):
        parser.error(f"--image_file {index}: item {case_name(item)} has {len(images)} image file(s)")
    return item | {"image": images[index]}


def split_datalist(
    cases: list, n_val: int, n_test: int, seed: int, extra: dict[str, int] | None = None
) -> dict[str, list]:
    """Disjoint ``test``, ``validation`` and ``extra`` lists (name: size, e.g. ``{"transferal": 18}``)
    drawn with ``seed``, and ``training`` with the rest, which must not be empty."""
    sizes = {"test": n_test, "validation": n_val, **(extra or {})}
    if any(n < 0 for n in sizes.values()) or sum(sizes.values()) >= len(cases):
        raise ValueError(f"cannot take {sizes} cases out of {len(cases)} and leave some for training.")
    return split_cases(cases, sizes, seed)


def cross_validation_fold(cases: list, folds: int, fold: int, n_val: int, seed: int) -> dict[str, list]:
    """Fold ``fold`` of a seeded ``folds``-fold split: that fold's cases are ``test``, ``n_val`` of the
    other cases ``validation``, the rest ``training`` (each list in the input order)."""
    if not 2 <= folds <= len(cases) or not 0 <= fold < folds:
        raise ValueError(
            f"fold {fold} of {folds} folds over {len(cases)} cases: need 2 <= folds <= cases, 0 <= fold < folds."
        )
    sizes = {f"fold{i}": len(cases) // folds + (i < len(cases) % folds) for i in range(folds)}
    test = split_cases(cases, sizes, seed)[f"fold{fold}"]
    others = [case for case in cases if case not in test]
    return {**split_datalist(others, n_val, 0, seed), "test": test}


def case_name(item: dict) -> str:
    image = item["image"][0] if isinstance(item["image"], list) else item["image"]
    return os.path.basename(image).split()[-1].split("_flair")[0].split(".nii")[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datalist", required=True)
    parser.add_argument("--key", default="training", help="list of the source datalist to split")
    parser.add_argument("--out", required=True)
    parser.add_argument("--val", type=int, required=True)
    parser.add_argument("--test", type=int, help="test cases (not with --folds)")
    parser.add_argument("--folds", type=int, help="K of a K-fold cross-validation; with --fold")
    parser.add_argument("--fold", type=int, help="the fold whose cases are the test list (0 .. K-1)")
    parser.add_argument("--list", action="append", default=[], metavar="NAME=N", help="a further disjoint list")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group", help="regex: cases whose image paths share its match stay together")
    parser.add_argument("--test_from", help="take the test list unchanged from this list of the source datalist")
    parser.add_argument("--only", metavar="KEY=VALUE", help="keep the items whose entry KEY equals VALUE")
    parser.add_argument("--image_file", type=int, metavar="I", help="keep the I-th of each item's image files")
    args = parser.parse_args(argv)
    extra = {name: int(n) for name, n in (item.split("=") for item in args.list)}
    with open(args.datalist) as f:
        source = json.load(f)
    if (args.folds is None) != (args.fold is None) or (args.folds is None) == (args.test is None):
        parser.error("give either --test, or --folds with --fold")
    items = source[args.key]
    if args.only:
        key, _, value = args.only.partition("=")
        items = [item for item in items if str(item.get(key)) == value]
        if not items:
            parser.error(f"no item of {args.key!r} has {key} = {value!r}")
    if args.image_file is not None:
        items = [one_image_file(item, args.image_file, parser) for item in items]
    try:
        groups = group_cases(items, args.group)
        if args.folds is None:
            groups = split_datalist(groups, args.val, args.test, args.seed, extra)
        else:
            groups = cross_validation_fold(groups, args.folds, args.fold, args.val, args.seed)
    except ValueError as e:
        parser.error(str(e))
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
