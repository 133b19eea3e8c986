"""Write a split Decathlon-style datalist from the KiTS19 or LiTS folder layout.

- KiTS19 (``--layout kits19``): ``<root>/case_XXXXX/imaging.nii.gz`` and ``segmentation.nii.gz``
  (0 background, 1 kidney, 2 tumour). Cases without a segmentation (the KiTS19 test cases) are skipped.
- LiTS (``--layout lits``): ``<root>/**/volume-N.nii`` and ``segmentation-N.nii`` (0, 1 liver, 2 tumour).

Every label map is read to count the voxels of ``--target_labels`` (the tumour: 2 in both): cases
without any are listed, and no case with it at all is an error (wrong label or wrong folder).
Paths are relative to ``root``, so bundle configs take ``--dataset_dir <root> --datalist <out>``.

    python -m tools.data.tumour_ct_datalist --layout kits19 --root /data/kits19/data --out /data/kits19/datalist.json \
        --val 20 --test 42 --seed 0
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from tools.data.split_datalist import split_datalist

LAYOUTS = {
    "kits19": {"labels": {"0": "background", "1": "kidney", "2": "tumour"}},
    "lits": {"labels": {"0": "background", "1": "liver", "2": "tumour"}},
}


def find_cases(root: Path, layout: str) -> list[dict]:
    """One entry per image with a label map, paths relative to ``root``, in sorted order."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)}.")
    entries = []
    if layout == "kits19":
        for image in sorted(root.glob("case_*/imaging.nii*")):
            label = next(iter(sorted(image.parent.glob("segmentation.nii*"))), None)
            if label is not None:
                entries.append({"image": str(image.relative_to(root)), "label": str(label.relative_to(root))})
    else:
        for image in sorted(root.rglob("volume-*.nii*"), key=lambda p: int(re.findall(r"\d+", p.name)[0])):
            number = re.findall(r"\d+", image.name)[0]
            label = next(iter(sorted(image.parent.glob(f"segmentation-{number}.nii*"))), None)
            if label is None:
                raise FileNotFoundError(f"{image} has no segmentation-{number}.nii(.gz) beside it.")
            entries.append({"image": str(image.relative_to(root)), "label": str(label.relative_to(root))})
    if not entries:
        pattern = "case_*/imaging.nii.gz" if layout == "kits19" else "volume-N.nii"
        raise FileNotFoundError(f"no {layout} case ({pattern} with its segmentation) below {root}.")
    return entries


def target_voxels(root: Path, entries: list[dict], target_labels: list[int]) -> dict[str, int]:
    """Voxels of the target labels in each case's label map (the file named when unreadable)."""
    counts = {}
    for entry in entries:
        path = root / entry["label"]
        try:
            voxels = np.asanyarray(nib.load(path).dataobj)
        except Exception as e:
            raise ValueError(f"cannot read label map {path}: {e}") from e
        counts[entry["label"]] = int(np.isin(voxels, target_labels).sum())
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", required=True, choices=sorted(LAYOUTS))
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--out", required=True)
    parser.add_argument("--target_labels", type=int, nargs="+", default=[2], help="the tumour label value(s)")
    parser.add_argument("--val", type=int, required=True)
    parser.add_argument("--test", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    entries = find_cases(args.root, args.layout)
    counts = target_voxels(args.root, entries, args.target_labels)
    without = [label for label, n in counts.items() if n == 0]
    if len(without) == len(entries):
        raise SystemExit(
            f"error: none of the {len(entries)} label maps below {args.root} holds label {args.target_labels}; "
            "check --target_labels (KiTS19 and LiTS tumours are 2)."
        )
    if without:
        print(f"warning: {len(without)} case(s) hold no label {args.target_labels}: {', '.join(without)}")
    split = split_datalist(entries, args.val, args.test, args.seed)
    datalist = {
        "name": f"{args.layout} from {args.root}",
        "modality": {"0": "CT"},
        "labels": LAYOUTS[args.layout]["labels"],
        "target_labels": args.target_labels,
        **split,
    }
    with open(args.out, "w") as f:
        json.dump(datalist, f, indent=2)
    sizes = ", ".join(f"{key} {len(items)}" for key, items in split.items())
    print(f"wrote {len(entries)} cases ({sizes}) to {args.out}; use --dataset_dir {args.root} --datalist {args.out}")


if __name__ == "__main__":
    main()
