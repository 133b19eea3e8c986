#!/usr/bin/env bash
# Pipeline check of the HLFD bundle's LiTS-style liver-tumour path on one real contrast CT:
# 3D-IRCADb-01 patient 1 (129 x 512 x 512 voxels of 0.57 x 0.57 x 1.6 mm; liver and 7 tumours
# outlined by experts), converted with tools.data.ircad_to_lits. The one case is the training,
# validation and test set at once, so the Dice printed shows that the path runs on real CT (HU
# window, tumour-slice sampling, slice-wise whole-volume inference written back on the CT's grid),
# not how good HLFD is.
#   bash tools/reproduce/hlfd_ircad.sh PATIENT_DIR [OUT_DIR] [EPOCHS]
# PATIENT_DIR is a 3Dircadb1.<n> folder with PATIENT_DICOM/ and an unpacked MASKS_DICOM/.
set -euo pipefail
patient=$(cd "${1:?usage: hlfd_ircad.sh PATIENT_DIR [OUT_DIR] [EPOCHS]}" && pwd)
out=${2:-/tmp/hlfd_ircad}
epochs=${3:-20}
source "$(dirname "$0")/lib.sh"
mkdir -p "$out"
"$PYTHON" -m tools.data.ircad_to_lits "$patient" --out "$out/lits"
number=${patient##*.}
case="[{\"image\": \"volume-$number.nii.gz\", \"label\": \"segmentation-$number.nii.gz\"}]"
echo "{\"training\": $case, \"validation\": $case, \"test\": $case}" > "$out/datalist.json"
bundle_setup hlfd_tumour_ct
window=(--hu_window "[-40,160]" --pixdim "[1.5,1.5,-1]" --inference_roi_size "[224,224]")  # one window per slice; FlexibleUNet needs multiples of 32
common=(--dataset_dir "$out/lits" --datalist "$out/datalist.json" "${window[@]}" --target_labels "[2]"
    --roi_size "[96,96]" --slices_per_volume 8 --num_workers 0 --val_interval "$epochs")  # whole-volume validation: minutes
ct_check "$out" "$epochs" "$out/lits/volume-$number.nii.gz" "${window[@]}"
"$PYTHON" - "$out/lits/segmentation-$number.nii.gz" "$out"/inference/*/*_seg.nii.gz "$out"/inference/*_seg.nii.gz <<'PY'
import sys, nibabel as nib, numpy as np
from pathlib import Path
from tools.measure.overlap import dice
truth, written = nib.load(sys.argv[1]), [nib.load(p) for p in sys.argv[2:] if Path(p).is_file()][0]
same_grid = written.shape == truth.shape and np.allclose(written.affine, truth.affine, atol=1e-3)
t, w = np.asarray(truth.dataobj) == 2, np.asarray(written.dataobj) > 0
print(f"inference on the CT's grid: {same_grid} {written.shape}; tumour Dice on the CT's grid {dice(t, w):.3f}")
PY
echo "tumour Dice of the student on its training CT (evaluate.json): $(grep -h "test_" "$out/evaluate/metrics.csv")"
