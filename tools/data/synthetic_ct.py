"""Write seeded abdominal-CT-like phantoms (Hounsfield units) in the KiTS19, LiTS or MSD Task09 layout.

Each case is a soft-tissue body (about 40 HU) in air (-1000 HU) holding an enhancing organ
(about 150 HU, label 1) with, in most cases, a darker tumour inside it (about 70 HU, label 2).
- ``--layout kits19``: ``case_XXXXX/imaging.nii.gz`` and ``segmentation.nii.gz``, stored as KiTS19
  does, slice axis first (array ``(z, y, x)``, the affine says so), which tests reorientation.
- ``--layout lits``: ``volume-N.nii`` and ``segmentation-N.nii``, array ``(x, y, z)``.
- ``--layout msd_spleen``: the Medical Segmentation Decathlon Task09 layout, ``imagesTr/spleen_N.nii.gz``
  and ``labelsTr/spleen_N.nii.gz`` (organ = spleen, label 1; no tumour), ``imagesTs/`` with two
  unlabelled cases, and a Decathlon ``dataset.json`` (``training`` and ``test`` lists).

    python -m tools.data.synthetic_ct --out /tmp/kits_phantoms --layout kits19 --cases 8 --size 64 --slices 8
"""

from __future__ import annotations

import argparse
import json
import os

import nibabel as nib
import numpy as np

from tools.data.shapes import ellipsoid

SPACING = (1.5, 1.5, 3.0)


def make_case(rng: np.random.Generator, size: int, slices: int, tumour: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(hu, label)`` arrays of shape (size, size, slices), axes x, y, z."""
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), np.arange(slices), indexing="ij"))
    x, y = grid[0], grid[1]
    c = (size - 1) / 2
    body = ((x - c) / (0.45 * size)) ** 2 + ((y - c) / (0.38 * size)) ** 2 <= 1
    organ_centre = np.array([c + rng.uniform(-0.12, 0.12) * size, c + rng.uniform(-0.1, 0.1) * size, (slices - 1) / 2])
    organ_radii = np.array([rng.uniform(0.15, 0.22) * size, rng.uniform(0.12, 0.18) * size, 0.45 * slices])
    organ = ellipsoid(grid, organ_centre, organ_radii)
    label = organ.astype(np.uint8)
    if tumour:
        t_centre = organ_centre + np.array([*(rng.uniform(-0.4, 0.4, 2) * organ_radii[:2]), rng.uniform(-1, 1)])
        t_radii = np.array([*(rng.uniform(0.3, 0.5, 2) * organ_radii[:2]), 0.25 * slices])
        lesion = ellipsoid(grid, t_centre, t_radii)
        label[lesion & organ] = 2
    hu = np.where(body, 40.0, -1000.0) + rng.normal(0, 12, body.shape)
    hu[label == 1] = 150 + rng.normal(0, 12, int((label == 1).sum()))
    hu[label == 2] = 70 + rng.normal(0, 12, int((label == 2).sum()))
    return hu.astype(np.int16), label


def save(array: np.ndarray, path: str, slice_axis_first: bool) -> None:
    affine = np.diag([*SPACING, 1.0])
    if slice_axis_first:  # KiTS19 stores (z, y, x): the affine maps array axis 0 to z
        array = np.transpose(array, (2, 1, 0))
        affine = np.array([[0, 0, SPACING[0], 0], [0, SPACING[1], 0, 0], [SPACING[2], 0, 0, 0], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(array, affine), path)


def write_msd_spleen(rng: np.random.Generator, args: argparse.Namespace) -> None:
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        os.makedirs(os.path.join(args.out, folder), exist_ok=True)
    training, test = [], []
    for i in range(args.cases + 2):
        hu, label = make_case(rng, args.size, args.slices, tumour=False)
        name = f"spleen_{i + 1}.nii.gz"
        if i < args.cases:
            save(hu, os.path.join(args.out, "imagesTr", name), False)
            save(label, os.path.join(args.out, "labelsTr", name), False)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            save(hu, os.path.join(args.out, "imagesTs", name), False)
            test.append(f"./imagesTs/{name}")
    dataset = {
        "name": "Spleen (synthetic phantoms)",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "spleen"},
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }
    with open(os.path.join(args.out, "dataset.json"), "w") as f:
        json.dump(dataset, f, indent=2)
    print(f"wrote {args.cases} labelled and {len(test)} test msd_spleen phantoms to {args.out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--layout", choices=("kits19", "lits", "msd_spleen"), default="kits19")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="in-plane size (voxels)")
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--no_tumour_every", type=int, default=0, help="every N-th case has no tumour (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    if args.layout == "msd_spleen":
        write_msd_spleen(rng, args)
        return
    for i in range(args.cases):
        tumour = not (args.no_tumour_every and (i + 1) % args.no_tumour_every == 0)
        hu, label = make_case(rng, args.size, args.slices, tumour)
        if args.layout == "kits19":
            folder = os.path.join(args.out, f"case_{i:05d}")
            os.makedirs(folder, exist_ok=True)
            save(hu, os.path.join(folder, "imaging.nii.gz"), True)
            save(label, os.path.join(folder, "segmentation.nii.gz"), True)
        else:
            os.makedirs(args.out, exist_ok=True)
            save(hu, os.path.join(args.out, f"volume-{i}.nii"), False)
            save(label, os.path.join(args.out, f"segmentation-{i}.nii"), False)
    print(f"wrote {args.cases} {args.layout} phantoms to {args.out}")


if __name__ == "__main__":
    main()
