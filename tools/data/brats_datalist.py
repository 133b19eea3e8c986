"""Write a Decathlon ``dataset.json`` from the BraTS 2018-2021 challenge folder layout.

Handles ``<root>/{HGG,LGG}/<case>/<case>_<modality>.nii.gz`` (2018, 2019),
``<root>/BraTS20_Training_XXX/...`` (2020) and ``<root>/BraTS2021_XXXXX/...`` (2021): every
``<case>_seg.nii.gz`` found below ``root`` is a case; ``image`` lists the requested modalities in
order (the channel order the bundle's ``modality_names`` must follow). Labels stay as BraTS
writes them (1, 2, 4); the KD-Net bundle merges them into whole tumour (``label > 0.5``).

    python -m tools.data.brats_datalist --root /data/BraTS2021_Training_Data --modalities flair t1 --out dataset.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")


def brats_cases(root: Path, modalities: list[str], suffix: str = ".nii.gz") -> list[dict]:
    """One datalist entry per ``*_seg`` file below ``root``, paths relative to ``root``."""
    entries = []
    for seg in sorted(root.rglob(f"*_seg{suffix}")):
        prefix = seg.name[: -len(f"_seg{suffix}")]
        images = [seg.parent / f"{prefix}_{m}{suffix}" for m in modalities]
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"case {prefix}: missing modality file(s) {missing}")
        entries.append({"image": [os.path.relpath(p, root) for p in images], "label": os.path.relpath(seg, root)})
    if not entries:
        raise FileNotFoundError(f"no '*_seg{suffix}' file below {root}: is this a BraTS training folder?")
    return entries


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--modalities", nargs="+", default=["flair", "t1"], choices=BRATS_MODALITIES)
    parser.add_argument("--suffix", default=".nii.gz", help="file suffix (.nii for some releases)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    entries = brats_cases(args.root, args.modalities, args.suffix)
    datalist = {
        "name": f"BraTS from {args.root}",
        "modality": {str(i): m.upper() for i, m in enumerate(args.modalities)},
        "labels": {"0": "background", "1": "necrotic/non-enhancing core", "2": "oedema", "4": "enhancing tumour"},
        "training": entries,
    }
    with open(args.out, "w") as f:
        json.dump(datalist, f, indent=2)
    print(f"wrote {len(entries)} cases to {args.out}; use --dataset_dir {args.root}")


if __name__ == "__main__":
    main()
