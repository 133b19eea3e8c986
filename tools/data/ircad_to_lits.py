"""Convert 3D-IRCADb-01 patients (DICOM CT and per-structure DICOM masks) to the LiTS layout the HLFD
bundle reads: ``volume-N.nii.gz`` (HU) and ``segmentation-N.nii.gz`` (0 background, 1 liver,
2 tumour).

    python -m tools.data.ircad_to_lits /data/3Dircadb1/3Dircadb1.1 [/data/3Dircadb1/3Dircadb1.7] --out /data/lits

Each patient folder holds ``PATIENT_DICOM/`` (the CT series) and ``MASKS_DICOM/`` (one series per
structure: ``liver``, ``livertumor01``, ``livertumor02``, ...; ``.zip`` files as distributed must be
unpacked first). Series are read with ITK (GDCM), so the volume keeps the scanner's geometry; a
mask is a structure where its voxels are non-zero, on the CT's grid (a mask of another size is an
error naming it). Tumours are written over the liver. ``N`` is the patient number of the folder
name (``3Dircadb1.7`` gives 7). 3D-IRCADb is licensed CC BY-NC-ND 4.0: convert it where you use
it, never redistribute the result.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import itk
import nibabel as nib
import numpy as np

LIVER, TUMOUR = 1, 2


def read_series(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """A DICOM series folder as (voxels in nibabel's i, j, k order, RAS affine)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no DICOM series folder {folder}")
    names = itk.GDCMSeriesFileNames.New(Directory=str(folder))
    series = names.GetSeriesUIDs()
    if len(series) != 1:
        raise ValueError(f"{folder} holds {len(series)} DICOM series, expected one")
    reader = itk.ImageSeriesReader[itk.Image[itk.SS, 3]].New(
        FileNames=names.GetFileNames(series[0]), ImageIO=itk.GDCMImageIO.New()
    )
    reader.Update()
    image = reader.GetOutput()
    voxels = itk.array_from_image(image).transpose(2, 1, 0)  # ITK arrays are k, j, i
    direction = itk.array_from_matrix(image.GetDirection())
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing())[None, :]
    lps[:3, 3] = np.asarray(image.GetOrigin())
    return voxels, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM's LPS to NIfTI's RAS


def patient_number(folder: Path) -> int:
    found = re.search(r"(\d+)$", folder.name)
    if found is None:
        raise ValueError(f"{folder}: expected a patient folder named like 3Dircadb1.<number>")
    return int(found.group(1))


def convert(patient: Path, out: Path) -> tuple[Path, Path, dict[str, int]]:
    """Write one patient's volume and segmentation; the voxels of each structure used."""
    volume, affine = read_series(patient / "PATIENT_DICOM")
    masks = patient / "MASKS_DICOM"
    tumours = sorted(masks.glob("livertumor*"))
    label = np.zeros(volume.shape, np.uint8)
    counts = {}
    for structure, value in [(masks / "liver", LIVER)] + [(t, TUMOUR) for t in tumours]:
        mask, _ = read_series(structure)
        if mask.shape != volume.shape:
            raise ValueError(f"mask {structure} has shape {mask.shape}, the CT {volume.shape}")
        label[mask > 0] = value
        counts[structure.name] = int((mask > 0).sum())
    number = patient_number(patient)
    out.mkdir(parents=True, exist_ok=True)
    image_path, label_path = out / f"volume-{number}.nii.gz", out / f"segmentation-{number}.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.int16), affine), image_path)
    nib.save(nib.Nifti1Image(label, affine), label_path)
    return image_path, label_path, counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("patients", nargs="+", type=Path, help="3Dircadb1.<n> folders")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    for patient in args.patients:
        image, label, counts = convert(patient, args.out)
        tumour = sum(v for k, v in counts.items() if k.startswith("livertumor"))
        print(f"{image.name}, {label.name}: liver {counts['liver']} voxels, {len(counts) - 1} tumour(s) of {tumour}")


if __name__ == "__main__":
    main()
