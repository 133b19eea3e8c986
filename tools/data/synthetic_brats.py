"""Write seeded 3-D multi-modal phantoms as NIfTI plus a Decathlon ``dataset.json``.

Each case is a head-like ellipsoid with smooth texture and one to three lesions. The lesion is
clearly visible in the first modality ("flair": strong contrast) and faint in the second ("t1":
weak contrast under noise, plus lesion-like distractor blobs), so a student reading only "t1" is
genuinely weaker than a teacher reading both. ``--t1_cue`` makes the distractors that much fainter
than the lesion in "t1" (0, the default: as dark as the lesion): a weak but learnable cue, which a
student can learn from few labels only poorly and a teacher's maps on many images can amplify.
Files follow the BraTS naming ``<case>/<case>_<modality>.nii.gz`` and ``<case>_seg.nii.gz`` (labels 0/1).

    python -m tools.data.synthetic_brats --out /tmp/phantoms --cases 20 --size 48 --seed 0
    python -m tools.data.synthetic_brats --out /tmp/phantoms --cases 36 --size 32 --t1_cue 0.2
"""

from __future__ import annotations

import argparse
import json
import os

import nibabel as nib
import numpy as np
from monai.transforms import GaussianSmooth

from tools.data.shapes import ellipsoid

MODALITIES = ("flair", "t1")
LESION_CONTRAST = {"flair": 2.0, "t1": -0.45}


def gaussian_filter(volume: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(GaussianSmooth(sigma)(volume[None].astype(np.float32)))[0]


def make_case(rng: np.random.Generator, size: int, t1_cue: float = 0.0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij")).astype(np.float32)
    centre = np.full(3, (size - 1) / 2)
    head = ellipsoid(grid, centre, np.array([0.42, 0.46, 0.40]) * size)
    lesion = np.zeros_like(head)
    for _ in range(rng.integers(1, 4)):
        c = centre + rng.uniform(-0.18, 0.18, 3) * size
        lesion |= ellipsoid(grid, c, rng.uniform(0.05, 0.12, 3) * size) & head
    images = {}
    for name in MODALITIES:
        texture = gaussian_filter(rng.normal(0, 1, head.shape), 2.0) * 2.0
        img = head * (1.0 + 0.3 * texture) + lesion * LESION_CONTRAST[name]
        if name == "t1":  # lesion-like distractors only the multi-modal teacher can rule out
            for _ in range(2):
                c = centre + rng.uniform(-0.25, 0.25, 3) * size
                distractor = ellipsoid(grid, c, rng.uniform(0.04, 0.08, 3) * size) & head & ~lesion
                img += (LESION_CONTRAST["t1"] + t1_cue) * distractor
        img = gaussian_filter(img, 0.7) + rng.normal(0, 0.25, head.shape) * head
        images[name] = (img * 100).astype(np.float32)
    return images, lesion.astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--size", type=int, default=48, help="edge length in voxels")
    parser.add_argument("--spacing", type=float, default=2.0, help="voxel size in mm")
    parser.add_argument("--val", type=int, default=4, help="cases in the 'validation' list")
    parser.add_argument("--test", type=int, default=4, help="cases in the 'test' list")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--t1_cue", type=float, default=0.0, help="how much fainter than the lesion the t1 distractors are"
    )
    args = parser.parse_args(argv)
    if args.cases < args.val + args.test + 1:
        parser.error("--cases must exceed --val + --test")
    rng = np.random.default_rng(args.seed)
    affine = np.diag([args.spacing] * 3 + [1.0])
    entries = []
    for i in range(args.cases):
        case = f"phantom_{i:03d}"
        os.makedirs(os.path.join(args.out, case), exist_ok=True)
        images, label = make_case(rng, args.size, args.t1_cue)
        for name, img in images.items():
            nib.save(nib.Nifti1Image(img, affine), os.path.join(args.out, case, f"{case}_{name}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), os.path.join(args.out, case, f"{case}_seg.nii.gz"))
        entries.append(
            {"image": [f"{case}/{case}_{m}.nii.gz" for m in MODALITIES], "label": f"{case}/{case}_seg.nii.gz"}
        )
    n_train = args.cases - args.val - args.test
    datalist = {
        "name": "synthetic multi-modal phantoms",
        "description": f"{args.cases} seeded phantoms (seed {args.seed}); lesion strong in flair, faint in t1"
        + (f"; t1 distractors {args.t1_cue} fainter than the lesion" if args.t1_cue else ""),
        "modality": {str(i): m.upper() for i, m in enumerate(MODALITIES)},
        "labels": {"0": "background", "1": "lesion"},
        "training": entries[:n_train],
        "validation": entries[n_train : n_train + args.val],
        "test": entries[n_train + args.val :],
    }
    with open(os.path.join(args.out, "dataset.json"), "w") as f:
        json.dump(datalist, f, indent=2)
    print(f"wrote {args.cases} cases to {args.out} ({n_train} training, {args.val} validation, {args.test} test)")


if __name__ == "__main__":
    main()
