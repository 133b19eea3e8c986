#!/usr/bin/env bash
# Pipeline demonstration of the HLFD bundle on one abdominal CT with TotalSegmentator labels:
# kidney window [-200, 300] HU, both kidneys (TotalSegmentator labels 2 and 3) as the target, 3 mm
# slices. The one case is training, validation and test set at once and its labels come from a
# model, so the Dice printed here shows that the pipeline runs on real CT, not how good HLFD is.
#   bash tools/reproduce/hlfd_ct_demo.sh CT_DIR [OUT_DIR] [EPOCHS]
# CT_DIR holds example_ct_sm.nii.gz and example_seg.nii.gz (TotalSegmentator's example files).
set -euo pipefail
data=$(cd "${1:?usage: hlfd_ct_demo.sh CT_DIR [OUT_DIR] [EPOCHS]}" && pwd)
out=${2:-/tmp/hlfd_ct_demo}
epochs=${3:-20}
mkdir -p "$out"
case='[{"image": "example_ct_sm.nii.gz", "label": "example_seg.nii.gz"}]'
echo "{\"training\": $case, \"validation\": $case, \"test\": $case}" > "$out/datalist.json"
source "$(dirname "$0")/lib.sh"
bundle_setup hlfd_tumour_ct
common=(--dataset_dir "$data" --datalist "$out/datalist.json" --target_labels "[2,3]" --pixdim "[3.0,3.0,-1]"
    --roi_size "[96,96]" --inference_roi_size "[128,128]" --slices_per_volume 8 --num_workers 0 --val_interval "$(( (epochs + 3) / 4 ))")
ct_check "$out" "$epochs" "$data/example_ct_sm.nii.gz" --pixdim "[3.0,3.0,-1]" --inference_roi_size "[128,128]"
echo "kidney Dice of the student on the training CT: $(grep test_mean_dice "$out/evaluate/metrics.csv")"
