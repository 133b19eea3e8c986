"""Write seeded short-axis cardiac-MRI-like phantoms in the layout of the ACDC datalist the bundles read.

Each patient has two frames (``imagesTr/acdc_patientNNN_frame01.nii.gz`` and ``frame02``, the
second a contracted heart) with labels 0 background, 1 right ventricle (a crescent beside the left
ventricle), 2 myocardium (a ring), 3 left ventricle (the blood pool inside the ring); intensities
are uint8 (blood bright, myocardium dark), slices 10 mm apart as in cine MRI. A Decathlon
``dataset.json`` lists ``training`` and ``validation`` patients.

    python -m tools.data.synthetic_cardiac --out /tmp/cardiac --patients 8 --validation 2 --size 64 --slices 6
"""

from __future__ import annotations

import argparse
import json
import os

import nibabel as nib
import numpy as np

from tools.data.shapes import ellipsoid

SPACING = (1.5, 1.5, 10.0)


def make_frame(rng: np.random.Generator, size: int, slices: int, contraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(image, label)`` arrays of shape (size, size, slices), axes x, y, z."""
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij")).astype(np.float64)
    x, y = grid
    image = np.zeros((size, size, slices), np.float32)
    label = np.zeros((size, size, slices), np.uint8)
    centre = (size - 1) / 2 + rng.uniform(-0.08, 0.08, 2) * size
    for z in range(slices):
        taper = 1 - 0.5 * (z / max(slices - 1, 1))  # smaller towards the apex
        r_lv = size * 0.12 * taper * contraction
        r_myo = r_lv + size * (0.06 + 0.02 * (1 - contraction))
        d = np.hypot(x - centre[0], y - centre[1])
        rv_centre = centre + np.array([-1.6 * r_myo, 0.3 * r_myo])
        rv = ellipsoid(grid, rv_centre, 1.2 * r_myo * np.array([1.0, 1.4])) & (d > r_myo)
        body = ellipsoid(grid, np.full(2, (size - 1) / 2), 0.46 * size * np.array([1.0, 0.8]))
        label[..., z][rv] = 1
        label[..., z][(d <= r_myo) & (d > r_lv)] = 2
        label[..., z][d <= r_lv] = 3
        image[..., z] = np.select(
            [label[..., z] == 3, label[..., z] == 1, label[..., z] == 2, body], [200, 180, 70, 110], 10
        )
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--validation", type=int, default=2, help="patients listed under 'validation'")
    parser.add_argument("--size", type=int, default=64, help="in-plane size (voxels)")
    parser.add_argument("--slices", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    for folder in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(args.out, folder), exist_ok=True)
    affine = np.diag([*SPACING, 1.0])
    cases = []
    for p in range(1, args.patients + 1):
        for frame, contraction in ((1, 1.0), (2, 0.7)):
            name = f"acdc_patient{p:03d}_frame{frame:02d}.nii.gz"
            image, label = make_frame(rng, args.size, args.slices, contraction)
            nib.save(nib.Nifti1Image(image, affine), os.path.join(args.out, "imagesTr", name))
            nib.save(nib.Nifti1Image(label, affine), os.path.join(args.out, "labelsTr", name))
            cases.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    n_val = 2 * args.validation
    datalist = {
        "name": "synthetic ACDC-like phantoms",
        "labels": {"0": "background", "1": "right_ventricle", "2": "myocardium", "3": "left_ventricle"},
        "training": cases[: len(cases) - n_val],
        "validation": cases[len(cases) - n_val :],
    }
    with open(os.path.join(args.out, "dataset.json"), "w") as f:
        json.dump(datalist, f, indent=2)
    print(f"wrote {args.patients} phantom patients (2 frames each) to {args.out}")


if __name__ == "__main__":
    main()
